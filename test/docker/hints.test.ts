import t from 'tap'
import { connectionHint, startHint } from '../../src/docker/hints.js'

t.test('an rlimit runc may not set names the ulimit and what to do', async (t) => {
  const msg =
    'cannot start container: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: error setting rlimits for ready process: error setting rlimit type 8: operation not permitted: unknown'
  t.match(startHint(msg), /ulimits\.memlock is above the Docker daemon's own hard limit.*LimitMEMLOCK=infinity.*or lower ulimits\.memlock/)
  t.match(startHint(msg.replace('type 8', 'type 3')), /ulimits\.stack/)
})

t.test('no NVIDIA runtime: how to install it', async (t) => {
  t.match(startHint('could not select device driver "nvidia" with capabilities: [[gpu]]'), /NVIDIA Container Toolkit/)
  t.match(startHint('could not select device driver "" with capabilities: [[gpu]]'), /NVIDIA Container Toolkit/)
})

t.test('other errors get no hint', async (t) => {
  t.equal(startHint('cannot start container: no such file'), undefined)
})

t.test('Docker out of reach: what to do, by the socket error', async (t) => {
  t.match(connectionHint('Docker is not reachable: connect ENOENT /var/run/docker.sock'), /no Docker socket at \/var\/run\/docker\.sock: .*-v \/var\/run\/docker\.sock:\/var\/run\/docker\.sock/)
  t.match(connectionHint('Docker is not reachable: connect EACCES /var/run/docker.sock'), /docker group.*--group-add \$\(stat -c %g \/var\/run\/docker\.sock\)/)
  t.match(connectionHint('Docker is not reachable: connect ECONNREFUSED 10.0.0.5:2375'), /nothing answers at 10\.0\.0\.5:2375/)
  t.equal(connectionHint('Docker is not reachable: socket hang up'), undefined)
})

/** Linux's numbers for the resource limits, as runc names them in its errors ("error setting rlimit type 8"). */
const RLIMITS = ['cpu', 'fsize', 'data', 'stack', 'core', 'rss', 'nproc', 'nofile', 'memlock', 'as', 'locks', 'sigpending', 'msgqueue', 'nice', 'rtprio', 'rttime']

/** What to do about an error Docker gave when starting a container, when it is a known one; undefined otherwise. */
export function startHint(message: string): string | undefined {
  const rlimit = /error setting rlimit type (\d+): operation not permitted/.exec(message)
  if (rlimit) {
    const name = RLIMITS[Number(rlimit[1])] ?? `type ${rlimit[1]}`
    return (
      `the project's ulimits.${name} is above the Docker daemon's own hard limit, which containers cannot exceed: ` +
      `raise the daemon's (e.g. LimitMEMLOCK=infinity for memlock, in a systemd drop-in for docker.service, then restart Docker), or lower ulimits.${name}`
    )
  }
  if (/could not select device driver "(nvidia)?" with capabilities: \[\[gpu\]\]/.test(message)) {
    return 'this Docker engine cannot give containers GPUs: install the NVIDIA Container Toolkit (nvidia-ctk runtime configure --runtime=docker) and restart Docker'
  }
  return undefined
}

/** What to do when Docker cannot be reached at all: by the socket error, with the socket's path. */
export function connectionHint(message: string): string | undefined {
  const sock = /(ENOENT|EACCES|ECONNREFUSED) (\S+)/.exec(message)
  const where = sock?.[2] ?? 'the Docker socket'
  switch (sock?.[1]) {
    case 'ENOENT':
      return (
        `there is no Docker socket at ${where}: is Docker installed and running (systemctl start docker)? ` +
        `Run in a container, FGMachine needs the host's socket mounted: -v /var/run/docker.sock:/var/run/docker.sock; elsewhere, set DOCKER_HOST`
      )
    case 'EACCES':
      return (
        `FGMachine's user may not use ${where}: add the user to the docker group (usermod -aG docker $USER, then log in again); ` +
        `in a container, run it with the socket's group: --group-add $(stat -c %g /var/run/docker.sock)`
      )
    case 'ECONNREFUSED':
      return `nothing answers at ${where}: the Docker daemon is not running there (systemctl start docker), or DOCKER_HOST names the wrong one`
    default:
      return undefined
  }
}

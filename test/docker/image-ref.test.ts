import t from 'tap'
import { imageReferenceProblem, parseImageReference, registryOf } from '../../src/docker/image-ref.js'

t.test('references Docker reads are accepted, split as Docker splits them', async (t) => {
  const cases: Array<[string, object]> = [
    ['busybox', { domain: 'docker.io', path: 'library/busybox', tag: undefined }],
    ['pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime', { domain: 'docker.io', path: 'pytorch/pytorch', tag: '2.5.1-cuda12.4-cudnn9-runtime' }],
    ['docker.io/library/node:24-slim', { domain: 'docker.io', path: 'library/node', tag: '24-slim' }],
    ['index.docker.io/team/model:1', { domain: 'docker.io', path: 'team/model' }],
    ['ghcr.io/org/sub/model:v1.2_RC', { domain: 'ghcr.io', path: 'org/sub/model', tag: 'v1.2_RC' }],
    ['127.0.0.1:5000/team/model', { domain: '127.0.0.1:5000', path: 'team/model', tag: undefined }],
    ['localhost/model:1', { domain: 'localhost', path: 'model' }],
    ['Registry.Example.com:443/a__b/c-d.e:1', { domain: 'Registry.Example.com:443', path: 'a__b/c-d.e' }],
    ['[::1]:5000/model:1', { domain: '[::1]:5000', path: 'model' }],
    [`nvcr.io/nvidia/pytorch:24.01-py3@sha256:${'ab'.repeat(32)}`, { domain: 'nvcr.io', tag: '24.01-py3', digest: `sha256:${'ab'.repeat(32)}` }],
    [`busybox@sha256:${'0'.repeat(64)}`, { path: 'library/busybox', tag: undefined, digest: `sha256:${'0'.repeat(64)}` }],
  ]
  for (const [ref, parts] of cases) {
    t.equal(imageReferenceProblem(ref), undefined, ref)
    t.match(parseImageReference(ref), parts, ref)
  }
  t.equal(imageReferenceProblem('a'.repeat(64)), undefined, 'an image id names a local image')
})

t.test('bad references: the problem says how to fix it', async (t) => {
  const cases: Array<[string, string | RegExp]> = [
    ['', 'image must not be empty'],
    ['MyOrg/Model:1', 'image "MyOrg/Model:1" has uppercase letters in its repository name "MyOrg/Model", which Docker refuses: repository names are lowercase, e.g. "myorg/model:1"'],
    ['ghcr.io/Org/model', /uppercase letters in its repository name "Org\/model".*e\.g\. "ghcr\.io\/org\/model"$/],
    ['pytorch/pytorch: 2.5', 'image "pytorch/pytorch: 2.5" must not contain spaces or line breaks'],
    ['https://ghcr.io/org/model:1', 'image "https://ghcr.io/org/model:1" must be an image reference, not a URL: write "ghcr.io/org/model:1"'],
    ['model:', 'image "model:" has an empty tag: write one after the ":" (e.g. ":latest") or drop the ":"'],
    ['model:-1', /has a bad tag "-1": a tag is up to 128 letters, digits, "_", "\." or "-", and starts with a letter, digit or "_"$/],
    [`model:${'a'.repeat(129)}`, /has a bad tag/],
    ['model@sha256:abc', /has a bad digest "sha256:abc": write @sha256: and the 64 lowercase hex digits/],
    [`model@sha256:${'A'.repeat(64)}`, /has a bad digest/],
    ['team//model', /has a bad repository name component "": write lowercase letters and digits/],
    ['team/model-', /bad repository name component "model-"/],
    ['team/mo..del', /bad repository name component "mo\.\.del"/],
    ['team/mödel', /bad repository name component "mödel"/],
    ['registry.example.com:port/model', /has a bad registry "registry\.example\.com:port": write a host name or IP address with an optional :port/],
    ['-bad.example.com/model', /has a bad registry "-bad\.example\.com"/],
    [':1', /names no repository/],
    [`team/${'a'.repeat(260)}`, /has a repository name longer than 255 characters/],
  ]
  for (const [ref, problem] of cases) {
    const got = imageReferenceProblem(ref)
    if (typeof problem === 'string') t.equal(got, problem, ref)
    else t.match(got, problem, ref)
    t.throws(() => parseImageReference(ref), { message: got ?? '(none)' }, `${ref}: parse throws the same`)
  }
})

t.test('registryOf: the registry a pull goes to, also for references Docker would refuse', async (t) => {
  t.equal(registryOf('busybox:1'), 'docker.io')
  t.equal(registryOf('index.docker.io/team/model'), 'docker.io')
  t.equal(registryOf('ghcr.io/org/model:1'), 'ghcr.io')
  t.equal(registryOf('127.0.0.1:5000/model'), '127.0.0.1:5000')
  t.equal(registryOf('ghcr.io/Org/Model'), 'ghcr.io', 'uppercase in the path')
  t.equal(registryOf('Team/Model'), 'docker.io')
  t.equal(registryOf('a'.repeat(64)), undefined, 'an image id is pulled from nowhere')
})

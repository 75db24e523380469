/**
 * Image references, as Docker reads them (the distribution reference grammar):
 * `[host[:port]/]path[:tag][@digest]`, the path lowercase.
 */
export interface ImageReference {
  /** The registry host[:port]; `docker.io` when the reference names none. */
  domain: string
  /** The repository path in that registry (`library/…` for Docker Hub's official images). */
  path: string
  tag?: string
  digest?: string
}

export const DOCKER_HUB = 'docker.io'

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])'
const DOMAIN = new RegExp(`^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`)
const TAG = /^\w[\w.-]{0,127}$/
const DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-fA-F0-9]{32,}$/
const SHA256 = /^sha256:[a-f0-9]{64}$/
/** An image id (`docker images --no-trunc`), which names a local image and nothing to pull. */
const IMAGE_ID = /^(?:sha256:)?[a-f0-9]{64}$/
const NAME_MAX = 255

type Parsed = { ref: ImageReference; problem?: undefined } | { ref?: undefined; problem: string }

function analyse(image: string): Parsed {
  const bad = (why: string): Parsed => ({ problem: `image "${image}" ${why}` })
  if (image === '') return { problem: 'image must not be empty' }
  if (/\s/.test(image)) return bad('must not contain spaces or line breaks')
  const url = /^[a-z][a-z0-9+.-]*:\/\/(.*)$/i.exec(image)
  if (url) return bad(`must be an image reference, not a URL: write "${url[1]}"`)
  if (IMAGE_ID.test(image)) return { ref: { domain: '', path: image } }
  let rest = image
  let digest: string | undefined
  const at = rest.indexOf('@')
  if (at >= 0) {
    digest = rest.slice(at + 1)
    rest = rest.slice(0, at)
    if (!DIGEST.test(digest) || (digest.startsWith('sha256:') && !SHA256.test(digest))) {
      return bad(`has a bad digest "${digest}": write @sha256: and the 64 lowercase hex digits the registry gives (\`docker images --digests\` shows them)`)
    }
  }
  let tag: string | undefined
  const colon = rest.lastIndexOf(':')
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1)
    rest = rest.slice(0, colon)
    if (tag === '') return bad('has an empty tag: write one after the ":" (e.g. ":latest") or drop the ":"')
    if (!TAG.test(tag)) return bad(`has a bad tag "${tag}": a tag is up to 128 letters, digits, "_", "." or "-", and starts with a letter, digit or "_"`)
  }
  if (rest === '') return bad('names no repository: write one, e.g. "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"')
  // The first part names a registry when it looks like a host (Docker's own rule): a dot,
  // a port, or localhost. Unlike Docker, a first part with uppercase letters and neither
  // is taken as a repository (mistyped in uppercase), not as a registry named so.
  let domain = DOCKER_HUB
  let path = rest
  const slash = rest.indexOf('/')
  if (slash >= 0) {
    const first = rest.slice(0, slash)
    if (/[.:]/.test(first) || first === 'localhost') {
      domain = first
      path = rest.slice(slash + 1)
      if (!DOMAIN.test(domain)) return bad(`has a bad registry "${domain}": write a host name or IP address with an optional :port, e.g. "registry.example.com:5000/team/model"`)
    }
  }
  if (domain === 'index.docker.io') domain = DOCKER_HUB
  if (/[A-Z]/.test(path)) {
    const fixed = image.replace(path, path.toLowerCase())
    return bad(`has uppercase letters in its repository name "${path}", which Docker refuses: repository names are lowercase, e.g. "${fixed}"`)
  }
  for (const part of path.split('/')) {
    if (!PATH_COMPONENT.test(part)) {
      return bad(
        `has a bad repository name component "${part}": write lowercase letters and digits, with single ".", "_", "__" or "-" between them (not at either end)`,
      )
    }
  }
  if (rest.length > NAME_MAX) {
    return bad(`has a repository name longer than ${NAME_MAX} characters`)
  }
  if (domain === DOCKER_HUB && !path.includes('/')) path = `library/${path}`
  return { ref: { domain, path, tag, digest } }
}

/**
 * What is wrong with an image reference, in words that say how to fix it;
 * undefined when Docker can read it. For projects.json's `image`.
 */
export function imageReferenceProblem(image: string): string | undefined {
  return analyse(image).problem
}

/** The parts of a reference Docker can read; throws with the problem otherwise. */
export function parseImageReference(image: string): ImageReference {
  const r = analyse(image)
  if (r.problem !== undefined) throw new Error(r.problem)
  return r.ref
}

/**
 * The registry an image is pulled from (host[:port], `docker.io` for Docker
 * Hub); undefined for an image id, which names a local image only. Never
 * throws: a reference it cannot read is split as Docker would try it.
 */
export function registryOf(image: string): string | undefined {
  const r = analyse(image)
  if (r.ref) return r.ref.domain || undefined
  const first = image.split('/')[0] ?? ''
  return image.includes('/') && (/[.:]/.test(first) || first === 'localhost') ? first : DOCKER_HUB
}

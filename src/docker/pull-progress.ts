import type { Logger } from 'pino'

/** One event of Docker's pull progress stream (`POST /images/create`), as the engine writes it. */
export interface PullEvent {
  status?: string
  /** The layer (short digest); for "Pulling from …", the tag. */
  id?: string
  progress?: string
  progressDetail?: { current?: number; total?: number }
  error?: string
  errorDetail?: { message?: string }
}

/** Where one image's pull stands, summed over its layers: what `docker pull` shows, on one line. */
export interface PullProgress {
  image: string
  /** started: nothing heard of its layers yet; extracting: all downloaded, some still unpacked. */
  phase: 'started' | 'downloading' | 'extracting' | 'done'
  layers: number
  layersDone: number
  /** Layers that were here already (not downloaded). */
  layersCached: number
  downloadedBytes: number
  /** The sizes Docker told so far (of the layers it downloads). */
  totalBytes: number
  /** Every layer still to download told its size: totalBytes is the whole. */
  sizesKnown: boolean
  /** downloadedBytes of totalBytes, 0-100 (100 once done). */
  percent: number
  elapsedMs: number
  /** Docker's last word, e.g. "Downloaded newer image for …", "Image is up to date for …". */
  status?: string
}

interface Layer {
  current: number
  total?: number
  downloaded: boolean
  extracting: boolean
  done: boolean
  cached: boolean
}

/**
 * Sums Docker's per-layer progress events of one pull. Pure: events in,
 * summaries out; the caller decides when to ask (every few seconds, and at the end).
 */
export class PullTracker {
  #layers = new Map<string, Layer>()
  #status: string | undefined

  constructor(
    readonly image: string,
    private readonly startedMs: number,
  ) {}

  add(e: PullEvent): void {
    const status = e.status ?? ''
    if (!e.id || status.startsWith('Pulling from')) {
      if (status.startsWith('Status: ')) this.#status = status.slice('Status: '.length)
      return
    }
    let l = this.#layers.get(e.id)
    if (!l) {
      l = { current: 0, downloaded: false, extracting: false, done: false, cached: false }
      this.#layers.set(e.id, l)
    }
    const total = e.progressDetail?.total
    switch (status) {
      case 'Downloading':
        if (total !== undefined && total > 0) l.total = total
        l.current = Math.max(l.current, e.progressDetail?.current ?? 0)
        break
      case 'Verifying Checksum':
      case 'Download complete':
        l.downloaded = true
        break
      case 'Extracting':
        // Its progressDetail counts the unpacking, not the download.
        l.downloaded = true
        l.extracting = true
        break
      case 'Pull complete':
        l.downloaded = l.done = true
        l.extracting = false
        break
      case 'Already exists':
        l.cached = l.done = true
        break
    }
  }

  summary(nowMs: number, done = false): PullProgress {
    let layersDone = 0
    let layersCached = 0
    let downloadedBytes = 0
    let totalBytes = 0
    let sizesKnown = true
    let extracting = false
    for (const l of this.#layers.values()) {
      if (l.done) layersDone++
      if (l.cached) {
        layersCached++
        continue
      }
      if (l.extracting) extracting = true
      if (l.total !== undefined) {
        totalBytes += l.total
        downloadedBytes += l.downloaded ? l.total : Math.min(l.current, l.total)
      } else if (!l.downloaded) {
        sizesKnown = false
      }
    }
    const layers = this.#layers.size
    const percent = done ? 100 : totalBytes > 0 ? Math.floor((downloadedBytes / totalBytes) * 100) : 0
    const phase = done ? 'done' : layers === 0 ? 'started' : extracting && downloadedBytes === totalBytes && sizesKnown ? 'extracting' : 'downloading'
    return {
      image: this.image,
      phase,
      layers,
      layersDone,
      layersCached,
      downloadedBytes,
      totalBytes,
      sizesKnown,
      percent,
      elapsedMs: Math.max(0, nowMs - this.startedMs),
      status: this.#status,
    }
  }
}

/** Bytes as Docker writes them: decimal units, 3 significant digits ("12.3 MB"). */
export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB']
  let i = 0
  let v = n
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000
    i++
  }
  return i === 0 ? `${n} B` : `${v.toPrecision(3)} ${units[i]}`
}

/** One line for the user, e.g. "pulling image x:1: 2/5 layers, 12.3 MB of 45.6 MB (27%)". */
export function describePull(p: PullProgress): string {
  const seconds = Math.round(p.elapsedMs / 1000)
  if (p.phase === 'done') {
    if (p.layers === 0 && p.status?.startsWith('Image is up to date')) return `image ${p.image} is up to date (${seconds} s)`
    const cached = p.layersCached ? ` (${p.layersCached} already here)` : ''
    return `pulled image ${p.image}: ${p.layers} layers${cached}, ${formatBytes(p.downloadedBytes)} in ${seconds} s`
  }
  if (p.phase === 'started') return `pulling image ${p.image}`
  const of = p.sizesKnown ? `${formatBytes(p.totalBytes)} (${p.percent}%)` : `at least ${formatBytes(p.totalBytes)}`
  const extracting = p.phase === 'extracting' ? ', extracting' : ''
  return `pulling image ${p.image}: ${p.layersDone}/${p.layers} layers, ${formatBytes(p.downloadedBytes)} of ${of}${extracting}`
}

const logged = new WeakSet<PullProgress>()

/**
 * Log a pull's progress at info: "pulling image" while it goes, "pulled image"
 * at the end. Every start sharing the pull hears the same summaries: each is
 * logged once.
 */
export function logPull(log: Logger, p: PullProgress): void {
  if (logged.has(p)) return
  logged.add(p)
  const fields = {
    image: p.image,
    phase: p.phase,
    layersDone: p.layersDone,
    layers: p.layers,
    downloadedBytes: p.downloadedBytes,
    totalBytes: p.totalBytes,
    percent: p.percent,
    elapsedS: Math.round(p.elapsedMs / 1000),
    ...(p.status ? { status: p.status } : {}),
  }
  log.info(fields, p.phase === 'done' ? 'pulled image' : 'pulling image')
}

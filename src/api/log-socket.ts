import type { FastifyInstance } from 'fastify'
import type { WebSocket } from 'ws'
import type { LogHub } from '../logs/log-hub.js'
import { isObjectId } from '../util/ids.js'

/** Above this much unsent live output (beyond the backlog) a browser is too slow: drop it rather than buffer without bound. */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024

/**
 * The WebSocket on `/`: an open connection is the machine's "online" light;
 * `experiments:<id>` subscribes it to that experiment's output, backlog first.
 */
export function logSocket(app: FastifyInstance, hub: LogHub): void {
  app.route({
    method: 'GET',
    url: '/',
    // Plain HTTP on `/` says what this is.
    handler: async () => ({ name: 'fgmachine', websocket: 'send "experiments:<id>" for its output' }),
    wsHandler: (socket: WebSocket, req) => {
      let unsubscribe: (() => void) | undefined
      socket.on('message', (data, isBinary) => {
        if (isBinary) return
        const text = data.toString()
        const m = /^experiments:(.*)$/s.exec(text)
        if (!m || !isObjectId(m[1])) {
          req.log.debug({ message: text.slice(0, 100) }, 'ignored WebSocket message')
          return
        }
        unsubscribe?.()
        // A viewer that has not read what it was sent before gets no more: subscribing
        // again and again must not queue the backlog again and again.
        if (socket.bufferedAmount > MAX_BUFFERED_BYTES) {
          req.log.warn('closing a log viewer that fell behind')
          socket.close(1013, 'too slow')
          return
        }
        // The backlog is sent whole, however it grows in JSON (an escape byte
        // becomes six); only what the viewer leaves unread beyond it counts as
        // falling behind.
        let replaying = true
        let replayed = 0
        unsubscribe = hub.subscribe(m[1], {
          send(chunk) {
            if (socket.readyState !== socket.OPEN) return false
            if (!replaying && socket.bufferedAmount > MAX_BUFFERED_BYTES + replayed) return false
            const message = JSON.stringify({ [chunk.stream]: chunk.text })
            socket.send(message)
            if (replaying) replayed += Buffer.byteLength(message)
            return true
          },
          drop(reason) {
            req.log.warn({ reason }, 'closing a log viewer that fell behind')
            socket.close(1013, 'too slow')
          },
        })
        replaying = false
      })
      socket.on('close', () => unsubscribe?.())
      socket.on('error', () => unsubscribe?.())
    },
  })
}

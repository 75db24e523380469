import t from 'tap'
import { mimeType } from '../../src/results/mime.js'

t.test('files get the type FGLab shows them by, as the original (mime-types) sent them', async (t) => {
  const want: Record<string, string> = {
    'plot.png': 'image/png',
    'a/b/photo.JPG': 'image/jpeg',
    'scan.tif': 'image/tiff',
    'frame.avif': 'image/avif',
    'favicon.ico': 'image/vnd.microsoft.icon',
    'rollout.mov': 'video/quicktime',
    'rollout.avi': 'video/x-msvideo',
    'rollout.mkv': 'video/x-matroska',
    'rollout.mp4': 'video/mp4',
    'train.log': 'text/plain',
    'scores.json': 'application/json',
    'config.yaml': 'text/yaml',
    'chart.svg': 'image/svg+xml',
  }
  for (const [file, type] of Object.entries(want)) t.equal(mimeType(file), type, file)
  t.equal(mimeType('weights.pt'), 'application/octet-stream', 'unknown: bytes')
  t.equal(mimeType('Makefile'), 'application/octet-stream', 'no extension: bytes')
})

import t from 'tap'
import { didYouMean, editDistance } from '../../src/util/did-you-mean.js'

t.test('edit distance counts a swap of neighbours as one edit', async (t) => {
  t.equal(editDistance('shm_szie', 'shm_size'), 1)
  t.equal(editDistance('capacty', 'capacity'), 1)
  t.equal(editDistance('', 'abc'), 3)
  t.equal(editDistance('same', 'same'), 0)
})

t.test('didYouMean: the closest known word, when close enough', async (t) => {
  const known = ['capacity', 'gpu_capacity', 'keep_results', 'shm_size', 'image', 'cpus']
  t.equal(didYouMean('capacty', known), 'capacity')
  t.equal(didYouMean('gpu_capcity', known), 'gpu_capacity')
  t.equal(didYouMean('Keep-Results', known), 'keep_results', 'case and - against _ do not count')
  t.equal(didYouMean('imgae', known), 'image')
  t.equal(didYouMean('colour', known), undefined, 'nothing close: no guess')
  t.equal(didYouMean('gpu', known), undefined, 'a short word must be nearly right')
})

import os from 'node:os'
import t from 'tap'
import { machineName } from '../src/machine.js'

t.test('the name FGLab lists the machine under', async (t) => {
  t.equal(machineName('gpu-box-7', true, 'host-a'), 'gpu-box-7', 'FGMACHINE_HOSTNAME wins')
  t.equal(machineName(undefined, true, 'host-a'), 'host-a', "in a container: the host's name from Docker, not the container id")
  t.equal(machineName(undefined, true, undefined), os.hostname(), 'Docker did not answer: our own')
  t.equal(machineName(undefined, false, 'engine-elsewhere'), os.hostname(), 'on the host: its own name (a remote engine is another host)')
})

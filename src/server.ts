// FGMachine's entry point. No static imports: on too old a Node.js, the code they pull in
// fails on load with an error that says nothing useful (execa: "TEXT_ENCODINGS.union is
// not a function" on Node 20), before any of FGMachine's own code runs.
const [major = 0, minor = 0] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 22)) {
  process.stderr.write(
    `fgmachine: needs Node.js 22.22 or newer (24 LTS recommended); this is v${process.versions.node} (${process.execPath}).\n` +
      'Install Node.js 24 (https://nodejs.org, or your package manager), or run FGMachine as its Docker image (README: Running the image).\n',
  )
  process.exit(1)
}
await import('./main.js')
export {}

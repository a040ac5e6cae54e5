// An open HTTP and UDP tracker on IPv6 loopback for the end-to-end tests:
//   node tracker.mjs PORT
// Prints "listening" once both answer. Only the server is imported: the package's CLI and index
// need the WebRTC module, which is not installed (npm install --ignore-scripts).
import Server from 'bittorrent-tracker/server'

const port = Number(process.argv[2])
const server = new Server({ http: true, udp: true, ws: false, stats: false })
server.on('error', (err) => {
  console.error(`tracker error: ${err.message}`)
  process.exit(1)
})
server.on('warning', (err) => console.error(`tracker warning: ${err.message}`))
server.on('listening', () => console.log('listening'))
server.listen(port, { http: '::1', udp: '127.0.0.1', udp6: '::1' })

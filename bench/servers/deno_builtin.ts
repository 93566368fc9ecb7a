/**
 * Deno's built-in WebSocket server (`Deno.serve` + `Deno.upgradeWebSocket`)
 * as an echo server: the peer Sluice-on-Deno is compared with.
 *
 * @module
 */

const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (request) => {
  if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    return new Response("Upgrade required", { status: 426 });
  }
  const { socket, response } = Deno.upgradeWebSocket(request);
  socket.binaryType = "arraybuffer";
  socket.onmessage = (event) => socket.send(event.data);
  return response;
});
console.log(JSON.stringify({ port: server.addr.port }));

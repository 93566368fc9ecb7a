/**
 * Deno's built-in WebSocket server as a broadcast server: what a Deno user
 * writes without a pub/sub layer, a loop over the subscribers' sockets
 * calling `send` (each call frames the message again). Deno's built-in
 * server does not offer permessage-deflate.
 *
 * @module
 */

const subscribers = new Set<WebSocket>();
const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (request) => {
  const path = new URL(request.url).pathname;
  if (path !== "/sub" && path !== "/pub") return new Response("Not found", { status: 404 });
  const { socket, response } = Deno.upgradeWebSocket(request);
  socket.binaryType = "arraybuffer";
  if (path === "/sub") {
    socket.onopen = () => subscribers.add(socket);
    socket.onclose = () => subscribers.delete(socket);
  } else {
    socket.onmessage = (event) => {
      for (const sub of subscribers) sub.send(event.data);
    };
  }
  return response;
});
console.log(JSON.stringify({ port: server.addr.port }));

import { createMongoAbility } from '@casl/ability';
import { once } from 'node:events';
import { connect, type AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { WsConnection, type WsConnectionOwner } from './ws-connection';
import { nativeFrameWriterLoaded } from './ws-frame';

const owner: WsConnectionOwner = {
  onMessage: () => undefined,
  onClose: () => undefined,
  onOverflow: () => undefined,
};

/** A server-side `ws` socket wrapped as the gateway wraps it. */
function wrap(socket: WebSocket, native: boolean): WsConnection {
  return new WsConnection(
    socket,
    { userId: 'u', roles: [], attrs: {}, exp: Math.floor(Date.now() / 1000) + 60 },
    createMongoAbility([]),
    { ip: '127.0.0.1', userAgent: null },
    10,
    owner,
    1 << 20,
    native,
  );
}

/** A real `ws` server socket wrapped as the gateway wraps it, and the client at the other end. */
async function pair(native: boolean) {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
  await once(wss, 'listening');
  const accepted = once(wss, 'connection') as Promise<[WebSocket]>;
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`);
  const [socket] = await accepted;
  await once(client, 'open');
  const connection = wrap(socket, native);
  return { wss, client, socket, connection };
}

describe.each(nativeFrameWriterLoaded ? [true, false] : [false])(
  'WsConnection.heartbeat (native frame writer: %s)',
  (native) => {
    it('sends a ping the client sees, whose pong clears missedPongs', async () => {
      const { wss, client, connection } = await pair(native);
      try {
        const pinged = once(client, 'ping');
        connection.missedPongs = 1;
        connection.heartbeat();
        const [payload] = (await pinged) as [Buffer];
        expect(payload.length).toBe(0);
        // ws answers the ping itself; the server reads the pong
        for (let i = 0; i < 100 && connection.missedPongs !== 0; i++) {
          await new Promise((r) => setTimeout(r, 10));
        }
        expect(connection.missedPongs).toBe(0);
      } finally {
        client.terminate();
        wss.close();
      }
    });

    it('writes nothing after the close frame once the socket is closing', async () => {
      // a raw TCP client, to see every byte the server writes after its close frame
      const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
      await once(wss, 'listening');
      const accepted = once(wss, 'connection') as Promise<[WebSocket]>;
      const raw = connect((wss.address() as AddressInfo).port, '127.0.0.1');
      await once(raw, 'connect');
      raw.write(
        'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      );
      const chunks: Buffer[] = [];
      raw.on('data', (c: Buffer) => chunks.push(c));
      try {
        const [socket] = await accepted;
        const connection = wrap(socket, native);
        connection.heartbeat(); // open: a ping (in the native batch, when there is one)
        connection.close(1000, 'bye'); // as the gateway closes: what is batched goes first
        expect(socket.readyState).toBe(WebSocket.CLOSING);
        connection.heartbeat(); // closing: nothing
        await new Promise((r) => setTimeout(r, 100));
        const all = Buffer.concat(chunks);
        const frames = all.subarray(all.indexOf('\r\n\r\n') + 4);
        // ping (0x89, no payload), then the close frame (0x88, code 1000 + "bye"), and no more
        expect([...frames]).toEqual([0x89, 0x00, 0x88, 5, 0x03, 0xe8, ...Buffer.from('bye')]);
      } finally {
        raw.destroy();
        wss.close();
      }
    });
  },
);

import { createServer } from 'node:net';
import { ephemeralRange, freePort } from './process';

describe('freePort', () => {
  it("reads the kernel's ephemeral range, or falls back to Linux's default", () => {
    expect(ephemeralRange('40000\t50000\n')).toEqual([40000, 50000]);
    expect(ephemeralRange('nonsense')).toEqual([32768, 60999]);
    expect(ephemeralRange(undefined)).toEqual([32768, 60999]);
    expect(ephemeralRange('80 70')).toEqual([32768, 60999]);
  });

  it('gives a port below the ephemeral range that a server can listen on, on every address', async () => {
    const [low] = ephemeralRange();
    const port = await freePort();
    expect(port).toBeGreaterThan(1024);
    expect(port).toBeLessThan(low);
    const srv = createServer();
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, '0.0.0.0', resolve);
    });
    await new Promise((resolve) => srv.close(resolve));
  });
});

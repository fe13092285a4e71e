import { Client } from 'pg';
import { sqlLiteral } from './change-capture.subscriber';

describe('sqlLiteral', () => {
  const escapeLiteral = (value: string) => Client.prototype.escapeLiteral.call(null, value);

  it('writes exactly what node-postgres escapeLiteral writes', () => {
    const samples = [
      '',
      'plain',
      `it's`,
      `''`,
      String.raw`back\slash`,
      String.raw`\'`,
      String.raw`\\`,
      `\\'\n\t\r\0`,
      `$$ dollar $tag$ ; COMMIT; -- not a comment`,
      `"quoted" E'x' U&'d' é 漢字 😀`,
      JSON.stringify({ title: `it's "a" \\ test`, tags: ['a\nb'] }),
    ];
    for (const s of samples) expect(sqlLiteral(s)).toBe(escapeLiteral(s));
  });

  it('agrees with escapeLiteral on random strings of quotes, backslashes and other characters', () => {
    const alphabet = [`'`, '\\', '"', 'a', ' ', '\n', 'é', '😀', '$', ';'];
    let seed = 42;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 2000; i++) {
      const length = Math.floor(next() * 20);
      let s = '';
      for (let k = 0; k < length; k++) s += alphabet[Math.floor(next() * alphabet.length)];
      expect(sqlLiteral(s)).toBe(escapeLiteral(s));
    }
  });
});

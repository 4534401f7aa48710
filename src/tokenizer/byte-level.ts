/**
 * GPT-2's byte-level alphabet: every byte 0..255 is shown as one printable Unicode character, so a
 * vocabulary of strings can hold arbitrary bytes. Printable Latin-1 bytes stand for themselves; the
 * rest (controls, space, 0x7F..0xA0, soft hyphen) are moved to U+0100 and up, in byte order. So the
 * space byte 0x20 is written "Ġ" (U+0120) and "\n" is "Ċ" (U+010A) in vocabulary entries.
 */
function buildByteToChar(): string[] {
  const chars: string[] = new Array(256);
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    chars[b] = String.fromCharCode(printable ? b : 256 + shifted++);
  }
  return chars;
}

/** BYTE_TO_CHAR[b] is the character that stands for byte b in vocabulary entries. */
export const BYTE_TO_CHAR: readonly string[] = buildByteToChar();

/** The inverse: character code (all below 0x144) → byte, or -1 for characters outside the alphabet. */
export const CHAR_TO_BYTE: Int16Array = (() => {
  const table = new Int16Array(0x200).fill(-1);
  BYTE_TO_CHAR.forEach((ch, b) => { table[ch.charCodeAt(0)] = b; });
  return table;
})();

const utf8 = new TextEncoder();

/**
 * The bytes a token string stands for, as Hugging Face's ByteLevel decoder computes them: each
 * character mapped back to its byte, or, when any character is outside the byte alphabet (added
 * tokens such as runs of plain spaces), the token's own UTF-8 bytes.
 */
export function tokenBytes(token: string): Uint8Array {
  const bytes = new Uint8Array(token.length);
  for (let i = 0; i < token.length; i++) {
    const code = token.charCodeAt(i);
    const b = code < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[code] : -1;
    if (b < 0) return utf8.encode(token);
    bytes[i] = b;
  }
  return bytes;
}

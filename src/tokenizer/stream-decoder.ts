/** What a stream decoder needs from a tokenizer (kept narrow so this file does not import it). */
interface TokenSource {
  tokenBytes(id: number): Uint8Array;
  isSpecial(id: number): boolean;
}

/**
 * Incremental decoding for generation. Tokens often end inside a UTF-8 character (an emoji or a CJK
 * character is commonly split over two or three byte tokens), so bytes are fed to a streaming
 * TextDecoder, which returns only complete characters and holds the rest back. The concatenation
 * of all push() results and flush() equals decode() of the same ids.
 */
export class StreamDecoder {
  // ignoreBOM: keep a leading U+FEFF, as decode() does.
  private readonly decoder = new TextDecoder('utf-8', { ignoreBOM: true });

  constructor(private readonly tokens: TokenSource, private readonly skipSpecialTokens: boolean) {}

  push(id: number): string {
    const bytes = this.tokens.tokenBytes(id); // throws for an unknown id
    if (this.skipSpecialTokens && this.tokens.isSpecial(id)) return '';
    return this.decoder.decode(bytes, { stream: true });
  }

  /** Whatever is held back (an incomplete character becomes U+FFFD); the decoder can be reused after. */
  flush(): string {
    return this.decoder.decode();
  }
}

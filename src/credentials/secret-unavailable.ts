/** A named secret could not be produced; the message names the secret and its source, never a value. */
export class SecretUnavailable extends Error {
  constructor(
    readonly secret: string,
    reason: string,
  ) {
    super(`secret "${secret}" is unavailable: ${reason}`);
    this.name = "SecretUnavailable";
  }
}

import { parseArgs, type ParseArgsConfig } from "node:util";

/** A mistake in how the command was called: exit 2 with the usage. */
export class UsageError extends Error {
  constructor(
    message: string,
    /** The command whose usage is shown, when known. */
    readonly command?: string,
  ) {
    super(message);
  }
}

type Options = NonNullable<ParseArgsConfig["options"]>;
type Parsed<T extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: T; allowPositionals: true; strict: true }>>;

export function parse<T extends Options>(args: string[], options: T, command?: string): Parsed<T> {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message, command);
  }
}

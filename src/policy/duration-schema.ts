import { z } from "zod";
import { parseDuration } from "./duration.js";

/** "250ms", "10s", "5m", "1h" in a policy, as milliseconds. */
export const duration = z
  .string()
  .refine((text) => parseDuration(text) !== undefined, {
    message: 'expected a duration like "250ms", "10s", "5m" or "1h"',
  })
  .transform((text) => parseDuration(text)!);

import type { z } from "zod";

type PathKey = string | number;
interface Def {
  type: string;
  shape?: Record<string, z.ZodType>;
  innerType?: z.ZodType;
  in?: z.ZodType;
  element?: z.ZodType;
  valueType?: z.ZodType;
  options?: z.ZodType[];
  left?: z.ZodType;
  right?: z.ZodType;
}

const defOf = (schema: z.ZodType) => (schema as unknown as { _zod: { def: Def } })._zod.def;

/** The object schemas a value may be, wrappers (default, optional, pipe, lazy...) and unions looked through. */
function objectsOf(schema: z.ZodType, depth = 0): Def[] {
  if (depth > 20) return [];
  const def = defOf(schema);
  if (def.type === "object") return [def];
  const inner = def.innerType ?? def.in;
  if (inner) return objectsOf(inner, depth + 1);
  if (def.type === "union" && def.options) return def.options.flatMap((option) => objectsOf(option, depth + 1));
  if (def.type === "intersection" && def.left && def.right) return [...objectsOf(def.left, depth + 1), ...objectsOf(def.right, depth + 1)];
  if (def.type === "lazy") {
    const getter = (schema as unknown as { _zod: { def: { getter?: () => z.ZodType } } })._zod.def.getter;
    return getter ? objectsOf(getter(), depth + 1) : [];
  }
  return [];
}

function unwrap(schema: z.ZodType): Def {
  let def = defOf(schema);
  for (let i = 0; i < 20 && (def.innerType ?? def.in); i++) def = defOf((def.innerType ?? def.in)!);
  return def;
}

/** The schemas one step down a path: a key of an object, an item of an array, a value of a record. */
function childSchemas(schema: z.ZodType, key: PathKey): z.ZodType[] {
  const def = unwrap(schema);
  if (def.type === "array" && def.element) return [def.element];
  if (def.type === "record" && def.valueType) return [def.valueType];
  return objectsOf(schema).flatMap((object) => (typeof key === "string" && object.shape?.[key] ? [object.shape[key]] : []));
}

/** The keys the schema allows at a path of a policy (for "did you mean" on an unknown key). */
export function allowedKeysAt(schema: z.ZodType, path: readonly PathKey[]): string[] {
  let current = [schema];
  for (const key of path) current = current.flatMap((candidate) => childSchemas(candidate, key));
  return [...new Set(current.flatMap((candidate) => objectsOf(candidate).flatMap((object) => Object.keys(object.shape ?? {}))))];
}

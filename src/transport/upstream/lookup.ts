import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from "node:dns";
import { isIP } from "node:net";
import { DestinationDenied, type DestinationGuard } from "../../policy/destinations.js";
import { normaliseHost } from "../../policy/hosts.js";

export type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;
export type LookupFunction = (hostname: string, options: LookupOptions, callback: LookupCallback) => void;

/**
 * Name resolution as portcullis dials: the policy's static overrides in front of the system
 * resolver, then every resolved address checked by the destination guard. The socket
 * connects to exactly the addresses checked here: there is no second lookup a DNS
 * rebinding could slip between.
 */
export function createLookup(resolve: Record<string, string>, guard: DestinationGuard): LookupFunction {
  const overrides = new Map(Object.entries(resolve).map(([name, address]) => [normaliseHost(name), address]));
  return (hostname, options, callback) => {
    const answer = (error: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => {
      if (error) return callback(error, options.all ? [] : "", 0);
      for (const { address } of addresses) {
        const why = guard.check(address);
        if (why) return callback(new DestinationDenied(`${hostname} resolves to ${address}: ${why}`), options.all ? [] : "", 0);
      }
      if (options.all) callback(null, addresses);
      else callback(null, addresses[0]!.address, addresses[0]!.family);
    };
    const override = overrides.get(normaliseHost(hostname));
    if (override !== undefined) {
      answer(null, [{ address: override, family: isIP(override) }]);
      return;
    }
    // Every address is resolved and checked, even when the caller wants one: a name must not
    // pass with one public address while also pointing somewhere private.
    dnsLookup(hostname, { ...options, all: true }, (error, addresses) => answer(error, addresses));
  };
}


import forge from "node-forge";

const { asn1, pki } = forge;
const OID = {
  data: "1.2.840.113549.1.7.1",
  certBag: "1.2.840.113549.1.12.10.1.3",
  x509Certificate: "1.2.840.113549.1.9.22.1",
  friendlyName: "1.2.840.113549.1.9.20",
  // Oracle's "trusted key usage" bag attribute: without it Java reads a certificate bag with
  // no key as nothing at all; with it (any extended key usage), as a trustedCertEntry.
  javaTrustedKeyUsage: "2.16.840.1.113894.746875.1.1",
  anyExtendedKeyUsage: "2.5.29.37.0",
  sha256: "2.16.840.1.101.3.4.2.1",
} as const;
const MAC_ITERATIONS = 10_000;

const seq = (items: forge.asn1.Asn1[]) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, items);
const set = (items: forge.asn1.Asn1[]) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SET, true, items);
const oid = (value: string) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(value).getBytes());
const octets = (bytes: string) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, bytes);
const explicit0 = (inner: forge.asn1.Asn1) => asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [inner]);
const integer = (value: number) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, asn1.integerToDer(value).getBytes());

function trustedCertBag(certPem: string, alias: string): forge.asn1.Asn1 {
  const der = asn1.toDer(pki.certificateToAsn1(pki.certificateFromPem(certPem))).getBytes();
  return seq([
    oid(OID.certBag),
    explicit0(seq([oid(OID.x509Certificate), explicit0(octets(der))])),
    set([
      seq([oid(OID.friendlyName), set([asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BMPSTRING, false, alias)])]),
      seq([oid(OID.javaTrustedKeyUsage), set([oid(OID.anyExtendedKeyUsage)])]),
    ]),
  ]);
}

/**
 * A PKCS#12 truststore (RFC 7292) holding CA certificates as Java trustedCertEntry items,
 * readable by keytool and by -Djavax.net.ssl.trustStoreType=PKCS12. Certificates are public,
 * so the safe is not encrypted; the password only keys the integrity MAC (HMAC-SHA256).
 */
export function javaTruststore(certificates: readonly { pem: string; alias: string }[], password: string): Buffer {
  const safeContents = seq(certificates.map((cert) => trustedCertBag(cert.pem, cert.alias)));
  const authenticatedSafe = seq([seq([oid(OID.data), explicit0(octets(asn1.toDer(safeContents).getBytes()))])]);
  const authSafeBytes = asn1.toDer(authenticatedSafe).getBytes();

  const salt = forge.random.getBytesSync(16);
  const md = forge.md.sha256.create();
  const key = forge.pkcs12.generateKey(password, forge.util.createBuffer(salt), 3, MAC_ITERATIONS, 32, md);
  const hmac = forge.hmac.create();
  hmac.start(forge.md.sha256.create(), key.getBytes());
  hmac.update(authSafeBytes);
  const mac = hmac.digest().getBytes();

  const pfx = seq([
    integer(3),
    seq([oid(OID.data), explicit0(octets(authSafeBytes))]),
    seq([seq([seq([oid(OID.sha256), asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, "")]), octets(mac)]), octets(salt), integer(MAC_ITERATIONS)]),
  ]);
  return Buffer.from(asn1.toDer(pfx).getBytes(), "binary");
}

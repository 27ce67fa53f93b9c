// Verify a detached JWS with unencoded payload (RFC 7515 + RFC 7797) using the `jose` library.
// Usage: node verify-jws.mjs PAYLOAD_FILE JWS_FILE JWKS_FILE
// Exit 0 and print the protected header when the signature verifies; exit 1 otherwise.
import { readFileSync } from "node:fs";
import { flattenedVerify, createLocalJWKSet } from "jose";

const [payloadPath, jwsPath, jwksPath] = process.argv.slice(2);
if (!payloadPath || !jwsPath || !jwksPath) {
  console.error("usage: node verify-jws.mjs PAYLOAD_FILE JWS_FILE JWKS_FILE");
  process.exit(2);
}
const payload = readFileSync(payloadPath);
const compact = readFileSync(jwsPath, "utf8").trim();
const parts = compact.split(".");
if (parts.length !== 3 || parts[1] !== "") {
  console.error(`${jwsPath}: not a detached compact JWS (<header>..<signature>)`);
  process.exit(1);
}
const jwks = createLocalJWKSet(JSON.parse(readFileSync(jwksPath, "utf8")));
try {
  const result = await flattenedVerify(
    { payload, protected: parts[0], signature: parts[2] },
    jwks,
    { crit: { b64: true }, algorithms: ["ES256", "EdDSA"] },
  );
  console.log(JSON.stringify(result.protectedHeader));
} catch (err) {
  console.error(`${jwsPath}: ${err.code ?? "error"}: ${err.message}`);
  process.exit(1);
}

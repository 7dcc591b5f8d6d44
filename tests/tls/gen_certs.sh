#!/bin/sh
# Generate a throwaway PKI for the TLS tests in DIR (openssl CLI):
#   ca.pem/ca.key          test CA
#   server.pem/server.key  server cert for "localhost" + 127.0.0.1, by ca
#   client.pem/client.key  client cert (CN kvmux-test-client), by ca
#   other-ca.pem           an unrelated CA (wrong-CA tests)
# EC P-256 keys: fast to generate, so each test run makes its own.
set -eu
dir=$1
cd "$dir"
q() { "$@" >/dev/null 2>&1 || { echo "gen_certs: failed: $*" >&2; exit 1; }; }
key() { q openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
key ca.key
q openssl req -x509 -new -key ca.key -days 2 -subj "/CN=kvmux test CA" -out ca.pem
key other-ca.key
q openssl req -x509 -new -key other-ca.key -days 2 -subj "/CN=kvmux other CA" -out other-ca.pem
key server.key
q openssl req -new -key server.key -subj "/CN=localhost" -out server.csr
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
q openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile server.ext -out server.pem
key client.key
q openssl req -new -key client.key -subj "/CN=kvmux-test-client" -out client.csr
printf 'extendedKeyUsage=clientAuth\n' > client.ext
q openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile client.ext -out client.pem
rm -f server.csr client.csr server.ext client.ext ca.srl

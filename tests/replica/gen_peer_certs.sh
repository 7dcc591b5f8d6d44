#!/bin/sh
# Generate a throwaway group PKI for the peer TLS tests in DIR (openssl CLI):
#   ca.pem/ca.key            the group CA
#   peerN.pem/peerN.key      N = 1..3: replica certificates signed by ca,
#                            for TLS server and client use (a replica is both)
#   rogue.pem/rogue.key      a replica certificate signed by another CA
#   other-ca.pem             that other CA
# The same commands an operator runs (docs/REPLICATION.md "Peer security").
# EC P-256 keys: fast to generate, so each test run makes its own.
set -eu
dir=$1
cd "$dir"
q() { "$@" >/dev/null 2>&1 || { echo "gen_peer_certs: failed: $*" >&2; exit 1; }; }
key() { q openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
key ca.key
q openssl req -x509 -new -key ca.key -days 2 -subj "/CN=kvmux group CA" -out ca.pem
key other-ca.key
q openssl req -x509 -new -key other-ca.key -days 2 -subj "/CN=kvmux other CA" -out other-ca.pem
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > peer.ext
cert() { # name CN ca
  key "$1.key"
  q openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  q openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial -days 2 \
    -extfile peer.ext -out "$1.pem"
}
for i in 1 2 3; do cert "peer$i" "kvmux-replica-$i" ca; done
cert rogue kvmux-replica-rogue other-ca
rm -f ./*.csr peer.ext ca.srl other-ca.srl

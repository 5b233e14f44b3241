#!/bin/sh
# Makes a private CA and a certificate for the teacher Service with openssl, then prints the kubectl command that
# stores them as Secret gkt-teacher-tls (tls.crt, tls.key, ca.crt: the files deploy/k8s/teacher.yaml and edge.yaml
# mount). Usage: deploy/k8s/teacher-tls.sh DIR [NAMESPACE]   (validity: GKT_TLS_DAYS, default 365)
# Keep DIR/ca.key away from the cluster: it signs certificates (renewals, client certificates for mutual TLS).
set -eu

dir=${1:?usage: teacher-tls.sh DIR [NAMESPACE]}
namespace=${2:-gkt}
days=${GKT_TLS_DAYS:-365}
service="teacher.$namespace.svc.cluster.local" # the host of the edges' dns:/// target, which they verify

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cd "$dir"
umask 077 # private keys readable by their owner only

openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
    -keyout ca.key -out ca.crt -subj "/CN=gkt-teacher-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout tls.key -out tls.csr -subj "/CN=$service"
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" "subjectAltName=DNS:$service,DNS:teacher.$namespace.svc,DNS:teacher.$namespace" \
    >tls.ext
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" -extfile tls.ext \
    -out tls.crt
rm -f tls.csr tls.ext ca.srl
chmod 644 ca.crt tls.crt

echo "wrote $dir/ca.crt, $dir/tls.crt, $dir/tls.key (certificate for $service) and $dir/ca.key (keep it offline)"
echo "store them in the cluster with:"
echo "  kubectl -n $namespace create secret generic gkt-teacher-tls" \
    "--from-file=$dir/tls.crt --from-file=$dir/tls.key --from-file=$dir/ca.crt"

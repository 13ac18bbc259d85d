#!/usr/bin/env bash
# A real Kubernetes API server (kube-apiserver + etcd) on loopback, for the
# tests that read SAFEATTACH_KUBE_APISERVER. Built from the Go module proxy
# with this machine's Go; nothing else is downloaded.
#
#   scripts/kube-apiserver.sh build [DIR]  once (about 15 min on 2 cores): DIR/bin/{kube-apiserver,etcd}
#   scripts/kube-apiserver.sh start [DIR]  fresh etcd + API server on 127.0.0.1:6443; admin kubeconfig in DIR/run/kubeconfig
#   scripts/kube-apiserver.sh stop  [DIR]
#
# then: SAFEATTACH_KUBE_APISERVER=DIR make test
# DIR defaults to /var/tmp/kube-apiserver. The server runs no controllers
# and no kubelet: tests create their namespaces' ServiceAccounts and give
# their pods a status themselves (internal/testenv/kubeapi).
set -euo pipefail
K8S=v1.37.2 STAGING=v0.37.2 ETCD=v3.7.3
action=${1:-}
DIR=${2:-/var/tmp/kube-apiserver}
RUN=$DIR/run

build() {
	mkdir -p "$DIR/bin" "$DIR/src/apiserver" "$DIR/src/etcd"
	local mod
	mod=$(cd / && go mod download -json "k8s.io/kubernetes@$K8S" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	# k8s.io/kubernetes points its staging modules at ./staging; a module
	# of our own points them at their published versions instead.
	cd "$DIR/src/apiserver"
	{
		printf 'module local/apiserver\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$K8S"
		awk '/^replace \(/{inside=1; next} inside && /^\)/{inside=0} inside {print $1}' "$mod/go.mod" |
			grep -v -e sample-cli -e sample-controller |
			while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$STAGING"; done
		echo ')'
	} > go.mod
	sed -n '/^package main/,$p' "$mod/cmd/kube-apiserver/apiserver.go" > main.go
	local ver="-X k8s.io/component-base/version.gitVersion=$K8S -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
	nice -n 19 go mod tidy
	nice -n 19 go build -trimpath -ldflags="-s -w $ver" -o "$DIR/bin/kube-apiserver" .
	cd "$DIR/src/etcd"
	printf 'module local/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD" > go.mod
	printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' > main.go
	nice -n 19 go mod tidy
	nice -n 19 go build -trimpath -ldflags="-s -w" -o "$DIR/bin/etcd" .
	echo "built $DIR/bin"
}

start() {
	[ -x "$DIR/bin/kube-apiserver" ] || { echo "not built: $0 build $DIR" >&2; exit 1; }
	stop 2>/dev/null || true
	rm -rf "$RUN"
	mkdir -p "$RUN/pki" "$RUN/certs"
	openssl genrsa -out "$RUN/pki/sa.key" 2048 2>/dev/null
	openssl rsa -in "$RUN/pki/sa.key" -pubout -out "$RUN/pki/sa.pub" 2>/dev/null
	local token
	token=$(openssl rand -hex 16)
	echo "$token,admin,admin,system:masters" > "$RUN/pki/tokens.csv"
	"$DIR/bin/etcd" --name local --data-dir "$RUN/etcd" \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster local=http://127.0.0.1:2380 > "$RUN/etcd.log" 2>&1 &
	echo $! > "$RUN/etcd.pid"
	until curl -sf http://127.0.0.1:2379/health > /dev/null; do kill -0 "$(cat "$RUN/etcd.pid")"; sleep 0.2; done
	# The default endpoint reconciler refuses a loopback advertise address.
	"$DIR/bin/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 --bind-address=127.0.0.1 \
		--advertise-address=127.0.0.1 --secure-port=6443 --cert-dir="$RUN/certs" \
		--service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$RUN/pki/sa.pub" \
		--service-account-signing-key-file="$RUN/pki/sa.key" --authorization-mode=Node,RBAC \
		--token-auth-file="$RUN/pki/tokens.csv" --service-cluster-ip-range=10.0.0.0/24 \
		--endpoint-reconciler-type=none > "$RUN/apiserver.log" 2>&1 &
	echo $! > "$RUN/apiserver.pid"
	until curl -sf --cacert "$RUN/certs/apiserver.crt" -H "Authorization: Bearer $token" https://127.0.0.1:6443/readyz > /dev/null 2>&1; do
		kill -0 "$(cat "$RUN/apiserver.pid")" || { tail -5 "$RUN/apiserver.log" >&2; exit 1; }
		sleep 0.2
	done
	cp "$RUN/certs/apiserver.crt" "$RUN/ca.crt"
	# The kubeconfig is written without kubectl.
	cat > "$RUN/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: $(base64 -w0 < "$RUN/ca.crt")
users:
- name: admin
  user:
    token: $token
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
KC
	chmod 600 "$RUN/kubeconfig"
	echo "ready: export SAFEATTACH_KUBE_APISERVER=$DIR (kubeconfig $RUN/kubeconfig)"
}

stop() {
	local p pid
	for p in apiserver etcd; do
		[ -f "$RUN/$p.pid" ] || continue
		pid=$(cat "$RUN/$p.pid")
		kill "$pid" 2> /dev/null || true
		while kill -0 "$pid" 2> /dev/null; do sleep 0.2; done
		rm -f "$RUN/$p.pid"
	done
}

case "$action" in
build | start | stop) "$action" ;;
*) sed -n '2,12p' "$0"; exit 2 ;;
esac

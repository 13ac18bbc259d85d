#!/usr/bin/env bash
# A real Kubernetes API server (kube-apiserver + etcd) on loopback, and a
# real node beside it (scripts/kube-node.sh: kubelet, containerd, runc),
# for the tests that read SAFEATTACH_KUBE_APISERVER. Built from the Go
# module proxy with this machine's Go; nothing else is downloaded.
#
#   scripts/kube-apiserver.sh build [DIR]  once (9 min on 2 cores, Go caches empty): DIR/bin/{kube-apiserver,etcd,kubelet,pause.tar,runtime/}
#   scripts/kube-apiserver.sh start [DIR]  fresh etcd + API server on free loopback ports, and the node; admin kubeconfig in DIR/run/kubeconfig
#   scripts/kube-apiserver.sh stop  [DIR]
#   scripts/kube-apiserver.sh run   DIR CMD...  start, run CMD with SAFEATTACH_KUBE_APISERVER=DIR, stop (even when CMD fails); CMD's exit code
#   scripts/kube-apiserver.sh version       the versions built (make keys its cache .cache/kube-apiserver/VERSION by them)
#
# `make test` does all of it (DIR is .cache/kube-apiserver/VERSION); by
# hand: start DIR, then SAFEATTACH_KUBE_APISERVER=DIR go test ./...; DIR
# defaults to /var/tmp/kube-apiserver. No controllers and no scheduler
# run: tests create their namespaces' ServiceAccounts, and either give
# their pods a status themselves (internal/testenv/kubeapi: pods bound to
# made-up nodes) or bind them to the real node, whose kubelet runs them
# (internal/testenv/kubenode). start stops a running node and server of
# DIR first: one node per machine (its name, address and cgroup are fixed).
set -euo pipefail
K8S=v1.37.2 STAGING=v0.37.2 ETCD=v3.7.3
action=${1:-}
DIR=${2:-/var/tmp/kube-apiserver}
DIR=$(realpath -m "$DIR")
RUN=$DIR/run
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# How long etcd and the API server may take to answer (a loaded 2-core
# machine takes 5-20 s), and to exit once told to.
READY_SECONDS=${KUBE_APISERVER_READY_SECONDS:-180}
STOP_SECONDS=20
# shellcheck source=scripts/kube-node.sh
. "$(dirname "${BASH_SOURCE[0]}")/kube-node.sh"

# build_one NAME: compiles the module in the current directory into
# DIR/bin/NAME, unless it is there (an interrupted build leaves nothing
# half-written: go build's output is renamed into place).
build_one() {
	nice -n 19 go mod tidy
	nice -n 19 go build -trimpath -ldflags="-s -w ${2:-}" -o "$DIR/bin/.$1.tmp" .
	mv "$DIR/bin/.$1.tmp" "$DIR/bin/$1"
}

# write_kubernetes_gomod MODULE DIR: a go.mod requiring k8s.io/kubernetes
# (downloaded into DIR). k8s.io/kubernetes points its staging modules at
# ./staging; a module of our own points them at their published versions.
write_kubernetes_gomod() {
	printf 'module %s\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$1" "$K8S"
	awk '/^replace \(/{inside=1; next} inside && /^\)/{inside=0} inside {print $1}' "$2/go.mod" |
		grep -v -e sample-cli -e sample-controller |
		while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$STAGING"; done
	echo ')'
}

version_ldflags() {
	echo "-X k8s.io/component-base/version.gitVersion=$K8S -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
}

# build_kubernetes BIN MAIN: BIN, once, from k8s.io/kubernetes at $K8S,
# whose main package is the file MAIN of that module (the API server's,
# the kubelet's).
build_kubernetes() {
	local bin=$1 main=$2 mod
	if [ -x "$DIR/bin/$bin" ]; then
		return
	fi
	mkdir -p "$DIR/src/$bin"
	mod=$(cd / && go mod download -json "k8s.io/kubernetes@$K8S" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	(
		cd "$DIR/src/$bin"
		write_kubernetes_gomod "local/$bin" "$mod" > go.mod
		sed -n '/^package main/,$p' "$mod/$main" > main.go
		build_one "$bin" "$(version_ldflags)"
	)
}

build() {
	mkdir -p "$DIR/bin"
	build_kubernetes kube-apiserver cmd/kube-apiserver/apiserver.go
	if [ ! -x "$DIR/bin/etcd" ]; then
		mkdir -p "$DIR/src/etcd"
		(
			cd "$DIR/src/etcd"
			printf 'module local/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD" > go.mod
			printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' > main.go
			build_one etcd
		)
	fi
	node_build
	echo "built $DIR/bin"
}

# free_port VAR: sets VAR to a loopback port nothing listens on, below
# Linux's ephemeral range (32768-60999) so that no outgoing connection
# takes it meanwhile. Ports already handed out in this start are in $taken.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 12000))
		case " $taken " in *" $p "*) continue ;; esac
		if ! (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null; then
			taken="$taken $p"
			printf -v "$1" %s "$p"
			return
		fi
	done
}

# alive NAME: the process in RUN/NAME.pid runs, and is ours (its command
# line names the pid file's directory, RUN or RUN/node: a pid file left
# by a reboot may name someone else now).
alive() {
	local pid file=$RUN/$1.pid
	[ -f "$file" ] || return 1
	pid=$(cat "$file")
	[ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2> /dev/null | grep -qF -- "$(dirname "$file")/"
}

# stop_proc NAME: SIGTERM to the process in RUN/NAME.pid if it is ours,
# SIGKILL after STOP_SECONDS; the pid file goes either way.
stop_proc() {
	local pid deadline
	if alive "$1"; then
		pid=$(cat "$RUN/$1.pid")
		kill "$pid" 2> /dev/null || true
		deadline=$((SECONDS + STOP_SECONDS))
		while kill -0 "$pid" 2> /dev/null; do
			if ((SECONDS >= deadline)); then kill -KILL "$pid" 2> /dev/null || true; fi
			sleep 0.1
		done
	fi
	rm -f "$RUN/$1.pid"
}

# wait_ready NAME URL [CURL ARGS...]: until URL answers, as long as NAME
# runs and for at most READY_SECONDS.
wait_ready() {
	local name=$1 url=$2 deadline=$((SECONDS + READY_SECONDS))
	shift 2
	until curl -sf --max-time 5 "$@" "$url" > /dev/null 2>&1; do
		if ! alive "$name"; then
			echo "kube-apiserver.sh: $name exited (tail of $RUN/$name.log):" >&2
			tail -n 5 "$RUN/$name.log" >&2
			return 1
		fi
		if ((SECONDS >= deadline)); then
			echo "kube-apiserver.sh: $name not ready after ${READY_SECONDS}s (tail of $RUN/$name.log):" >&2
			tail -n 5 "$RUN/$name.log" >&2
			return 1
		fi
		sleep 0.2
	done
}

# start_once: one attempt on fresh ports; on failure what it started is
# stopped again.
start_once() {
	local taken="" client peer secure oidc token kubelet_port="" bind=127.0.0.1
	free_port client
	free_port peer
	free_port secure
	free_port oidc
	node_clean
	rm -rf "$RUN"
	mkdir -p "$RUN/pki" "$RUN/certs"
	openssl genrsa -out "$RUN/pki/sa.key" 2048 2> /dev/null
	openssl rsa -in "$RUN/pki/sa.key" -pubout -out "$RUN/pki/sa.pub" 2> /dev/null
	token=$(openssl rand -hex 16)
	echo "$token,admin,admin,system:masters" > "$RUN/pki/tokens.csv"
	# Client-certificate users: the API server trusts this CA (and
	# publishes it for delegated authentication); tests sign users with
	# its key (internal/testenv/kubeapi).
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=client-ca \
		-keyout "$RUN/pki/client-ca.key" -out "$RUN/pki/client-ca.crt" 2> /dev/null
	# OIDC users: an issuer of our own on loopback (its discovery and key
	# set; internal/testenv/kubeapi/oidcissuer) that the API server's JWT
	# authenticator trusts; tests sign ID tokens with its key
	# (kubeapi.OIDCToken). Users are oidc:<sub>, groups oidc:<group>.
	openssl genrsa -out "$RUN/pki/oidc.key" 2048 2> /dev/null
	openssl rsa -in "$RUN/pki/oidc.key" -pubout -out "$RUN/pki/oidc.pub" 2> /dev/null
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=oidc-issuer -addext subjectAltName=IP:127.0.0.1 \
		-keyout "$RUN/pki/oidc-serving.key" -out "$RUN/pki/oidc-serving.crt" 2> /dev/null
	(cd "$REPO" && go build -o "$RUN/oidc-issuer" ./internal/testenv/kubeapi/oidcissuer)
	echo "https://127.0.0.1:$oidc" > "$RUN/oidc-issuer-url"
	"$RUN/oidc-issuer" -listen "127.0.0.1:$oidc" -issuer "https://127.0.0.1:$oidc" -tls-cert "$RUN/pki/oidc-serving.crt" \
		-tls-key "$RUN/pki/oidc-serving.key" -signing-public-key "$RUN/pki/oidc.pub" < /dev/null > "$RUN/oidc-issuer.log" 2>&1 &
	echo $! > "$RUN/oidc-issuer.pid"
	wait_ready oidc-issuer "https://127.0.0.1:$oidc/.well-known/openid-configuration" --cacert "$RUN/pki/oidc-serving.crt" || { stop; return 1; }
	cat > "$RUN/authentication.yaml" << AUTHN
apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
jwt:
  - issuer:
      url: https://127.0.0.1:$oidc
      audiences: [safeattach-oidc]
      certificateAuthority: |
$(sed 's/^/        /' "$RUN/pki/oidc-serving.crt")
    claimMappings:
      username: {claim: sub, prefix: "oidc:"}
      groups: {claim: groups, prefix: "oidc:"}
AUTHN
	# The API server's own record of the reviews a node agent asks for
	# (who asked to do what, and the answer): tests read it to show the
	# authorisation decisions from the API server's side.
	cat > "$RUN/audit-policy.yaml" << 'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: RequestResponse
    resources:
      - group: authorization.k8s.io
        resources: ["subjectaccessreviews"]
  - level: None
POLICY
	if node_wanted; then
		free_port kubelet_port
		node_prepare
		# Pods on the bridge reach the API server at the node's address.
		bind=0.0.0.0
	fi
	# A throwaway store: no fsync.
	"$DIR/bin/etcd" --name local --data-dir "$RUN/etcd" --unsafe-no-fsync \
		--listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
		--listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
		--initial-cluster "local=http://127.0.0.1:$peer" < /dev/null > "$RUN/etcd.log" 2>&1 &
	echo $! > "$RUN/etcd.pid"
	wait_ready etcd "http://127.0.0.1:$client/health" || { stop; return 1; }
	# The default endpoint reconciler refuses a loopback advertise address.
	# Privileged containers are allowed, as kubeadm and kind allow them:
	# Pod Security admission, not validation, is what refuses them in a
	# namespace (the peers' profiling pods, internal/realnode).
	"$DIR/bin/kube-apiserver" --allow-privileged=true --etcd-servers="http://127.0.0.1:$client" --bind-address=$bind \
		--advertise-address=127.0.0.1 --secure-port="$secure" --cert-dir="$RUN/certs" \
		--service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$RUN/pki/sa.pub" \
		--service-account-signing-key-file="$RUN/pki/sa.key" --authorization-mode=Node,RBAC \
		--token-auth-file="$RUN/pki/tokens.csv" --authentication-config="$RUN/authentication.yaml" --client-ca-file="$RUN/pki/client-ca.crt" --service-cluster-ip-range=10.0.0.0/24 \
		--audit-policy-file="$RUN/audit-policy.yaml" --audit-log-path="$RUN/audit.log" --audit-log-maxsize=64 --audit-log-maxbackup=1 \
		--endpoint-reconciler-type=none "${NODE_APISERVER_FLAGS[@]}" < /dev/null > "$RUN/apiserver.log" 2>&1 &
	echo $! > "$RUN/apiserver.pid"
	# Its serving certificate is written before it listens.
	wait_ready apiserver "https://127.0.0.1:$secure/readyz" --cacert "$RUN/certs/apiserver.crt" -H "Authorization: Bearer $token" || { stop; return 1; }
	cp "$RUN/certs/apiserver.crt" "$RUN/ca.crt"
	# The kubeconfig is written without kubectl.
	cat > "$RUN/kubeconfig" << KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$secure
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
	if [ -n "$kubelet_port" ]; then
		node_start "$secure" "$kubelet_port" || { stop; return 1; }
	fi
	echo "kube-apiserver.sh: ready on 127.0.0.1:$secure: export SAFEATTACH_KUBE_APISERVER=$DIR (kubeconfig $RUN/kubeconfig)"
}

start() {
	[ -x "$DIR/bin/kube-apiserver" ] && [ -x "$DIR/bin/etcd" ] || { echo "kube-apiserver.sh: not built: $0 build $DIR" >&2; return 1; }
	# A server left by an earlier run (killed make, crashed shell) goes first.
	stop
	# A port taken between its choice and the bind: try again elsewhere.
	local attempt
	for attempt in 1 2 3; do
		start_once && return
		echo "kube-apiserver.sh: start attempt $attempt failed" >&2
	done
	return 1
}

stop() {
	node_stop
	stop_proc apiserver
	stop_proc etcd
	stop_proc oidc-issuer
}

# run DIR CMD...: the server lives exactly as long as CMD (an interrupt or
# a failure stops it too).
run() {
	local rc=0
	trap 'stop' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	start
	SAFEATTACH_KUBE_APISERVER=$DIR "$@" || rc=$?
	stop
	trap - EXIT
	return "$rc"
}

# Each arm ends the script: bash reads a script as it runs it, so nothing
# after this line is read once an action has started (editing this file
# during a build is harmless).
case "$action" in
build | start | stop) "$action"; exit ;;
run) [ $# -ge 3 ] || { echo "usage: $0 run DIR CMD..." >&2; exit 2; }; shift 2; run "$@"; exit ;;
version) echo "k8s-$K8S-etcd-$ETCD-containerd-$CONTAINERD-runc-$RUNC"; exit ;;
*) sed -n '2,16p' "$0"; exit 2 ;;
esac

# A real node beside the API server of scripts/kube-apiserver.sh: a kubelet
# built from the Go module proxy at the API server's version, containerd
# and runc built from the module proxy too (Debian 12's containerd 1.6 and
# runc 1.1 run pods, but not pods with user namespaces: `hostUsers: false`
# needs containerd 2 and runc 1.2), the bridge CNI plugin from Debian, and
# a pause image built here (no registry is reachable). Sourced by kube-apiserver.sh, which
# builds, starts and stops it with the API server; not run on its own.
#
# What it starts, under DIR/run/node (the kubelet's own directory under
# /run/safeattach-node/<hash of DIR>: its sockets' paths must fit in 108
# bytes, which a checkout's path does not promise):
#   containerd  socket $NODE_SOCKETS/containerd.sock, root and state here
#   kubelet     node "safeattach-node", cgroupfs driver under the cgroup
#               /safeattach-node (so it never judges the tests' own
#               hand-made /kubepods cgroups orphans and kills them), its
#               root directory /run/safeattach-node/<hash>/kubelet, client
#               token of system:node:safeattach-node
# and writes DIR/run/node/env: NODE_NAME, NODE_IP, CONTAINERD_SOCKET, CTR.
#
# Pods get host networking or the bridge network 10.88.0.0/16; no
# kube-proxy runs, the service kubernetes (10.0.0.1:443) is DNATed to the
# API server instead. The node is skipped where it cannot run: with one
# line on stderr when the CNI plugins or iptables are missing, silently
# with KUBE_NODE=0 (the tests that need it then skip, or fail in CI).

NODE_NAME=safeattach-node
# The node's address, on lo: the kubelet refuses a loopback node IP, and
# this machine's kernel has no dummy interfaces. Pods on the bridge reach
# it through their gateway.
NODE_IP=10.87.0.1
NODE_CGROUP=safeattach-node
PAUSE_IMAGE=safeattach.test/pause:1
CONTAINERD=v2.4.2 RUNC=v1.5.3
NODE_APISERVER_FLAGS=()

node_wanted() {
	[ "${KUBE_NODE:-1}" != 0 ] || return 1
	if [ ! -x /usr/lib/cni/bridge ] || ! command -v iptables > /dev/null; then
		echo "kube-node.sh: no node (the CNI plugins or iptables missing: scripts/prereqs.sh installs them)" >&2
		return 1
	fi
	[ -x "$DIR/bin/kubelet" ] && [ -f "$DIR/bin/pause.tar" ] && [ -x "$DIR/bin/runtime/runc" ]
}

node_build() {
	build_kubernetes kubelet cmd/kubelet/kubelet.go
	if [ ! -x "$DIR/bin/runtime/runc" ]; then
		mkdir -p "$DIR/src/runtime" "$DIR/bin/runtime"
		(
			cd "$DIR/src/runtime"
			printf 'module local/runtime\n\ngo 1.26.0\n\nrequire (\n\tgithub.com/containerd/containerd/v2 %s\n\tgithub.com/opencontainers/runc %s\n)\n' "$CONTAINERD" "$RUNC" > go.mod
			printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "github.com/containerd/containerd/v2/cmd/containerd"\n\t_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"\n\t_ "github.com/containerd/containerd/v2/cmd/ctr"\n\t_ "github.com/opencontainers/runc"\n)\n' > tools.go
			nice -n 19 go mod tidy
			rm -rf .out && mkdir .out
			# No btrfs, devmapper or ZFS snapshotters (their C headers);
			# runc needs cgo and libseccomp for its filters.
			CGO_ENABLED=0 nice -n 19 go build -tags "no_btrfs no_devmapper no_zfs" -trimpath -ldflags=-s -o .out/ \
				github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
				github.com/containerd/containerd/v2/cmd/ctr
			CGO_ENABLED=1 nice -n 19 go build -tags seccomp -trimpath -ldflags=-s -o .out/runc github.com/opencontainers/runc
			mv .out/containerd .out/containerd-shim-runc-v2 .out/ctr "$DIR/bin/runtime/"
			mv .out/runc "$DIR/bin/runtime/runc"
		)
	fi
	if [ ! -f "$DIR/bin/pause.tar" ]; then
		mkdir -p "$DIR/src/pause/rootfs"
		(
			cd "$DIR/src/pause"
			printf 'module local/pause\n\ngo 1.26.0\n' > go.mod
			# The pod's first process: holds the namespaces, reaps orphans,
			# ends on SIGINT or SIGTERM.
			cat > main.go << 'GO'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	child := make(chan os.Signal, 16)
	signal.Notify(child, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			return
		case <-child:
			for {
				var ws syscall.WaitStatus
				if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
GO
			CGO_ENABLED=0 go build -trimpath -ldflags=-s -o rootfs/pause .
			image_archive "$PAUSE_IMAGE" rootfs '["/pause"]' "$DIR/bin/.pause.tar"
			mv "$DIR/bin/.pause.tar" "$DIR/bin/pause.tar"
		)
	fi
}

# image_archive NAME ROOTFS ENTRYPOINT-JSON OUT: a docker-archive of ROOTFS
# as one layer, which `ctr images import` takes.
image_archive() {
	local name=$1 rootfs=$2 entry=$3 out=$4 work diff
	work=$(mktemp -d)
	tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -cf "$work/layer.tar" .
	diff=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
	printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$entry" "$diff" > "$work/config.json"
	printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$name" > "$work/manifest.json"
	tar -C "$work" -cf "$out" manifest.json config.json layer.tar
	rm -rf "$work"
}

node_restrict_oom() {
	# CAP_SYS_RESOURCE is bit 24 of the effective set.
	if (( (16#$(awk '/^CapEff/ {print $2}' /proc/self/status) >> 24) & 1 )); then echo false; else echo true; fi
}

node_sockets() {
	# Unix socket paths are limited to 108 bytes; DIR may be long.
	echo "/run/safeattach-node/$(printf %s "$DIR" | sha256sum | cut -c1-12)"
}

# node_prepare: what the API server must know at its start: the node's
# token, and the certificate it shows the kubelet (for logs, exec and
# port-forward), signed by a CA only the kubelet trusts.
node_prepare() {
	local pki=$RUN/pki
	NODE_TOKEN=$(openssl rand -hex 16)
	echo "$NODE_TOKEN,system:node:$NODE_NAME,node-$NODE_NAME,system:nodes" >> "$pki/tokens.csv"
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kubelet-client-ca \
		-keyout "$pki/kubelet-client-ca.key" -out "$pki/kubelet-client-ca.crt" 2> /dev/null
	openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
		-keyout "$pki/apiserver-kubelet-client.key" -out "$pki/apiserver-kubelet-client.csr" 2> /dev/null
	openssl x509 -req -in "$pki/apiserver-kubelet-client.csr" -CA "$pki/kubelet-client-ca.crt" \
		-CAkey "$pki/kubelet-client-ca.key" -CAcreateserial -days 2 -out "$pki/apiserver-kubelet-client.crt" 2> /dev/null
	NODE_APISERVER_FLAGS=(--kubelet-client-certificate="$pki/apiserver-kubelet-client.crt"
		--kubelet-client-key="$pki/apiserver-kubelet-client.key" --kubelet-preferred-address-types=InternalIP)
	ip addr show dev lo | grep -qF " $NODE_IP/32" || ip addr add "$NODE_IP/32" dev lo
}

# node_start SECURE-PORT KUBELET-PORT: containerd, then the kubelet; waits
# until the node is Ready.
node_start() {
	local secure=$1 kport=$2 node=$RUN/node socks admin h
	socks=$(node_sockets)
	# The kubelet's cgroup root must exist in every hierarchy (v1) or in
	# the one (v2); a v1 cpuset starts empty and takes its parent's.
	for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
		[ -f "$h/cgroup.procs" ] || continue
		mkdir -p "$h$NODE_CGROUP"
		if [ -f "$h/cpuset.cpus" ]; then
			cat "$h/cpuset.cpus" > "$h$NODE_CGROUP/cpuset.cpus"
			cat "$h/cpuset.mems" > "$h$NODE_CGROUP/cpuset.mems"
		fi
	done
	mkdir -p "$node/cni" "$socks" "$node/containerd/state"
	# The runtime's state (each container's bundle and root filesystem
	# mount) on a tmpfs of its own, as /run is on a usual node: runc's
	# init in a pod's user namespace could not make the rootfs mount
	# private under this machine's root filesystem ("remount-propagation
	# ... MS_PRIVATE: permission denied" for every hostUsers: false pod).
	mount -t tmpfs -o mode=0711 tmpfs "$node/containerd/state"
	cat > "$node/containerd.toml" << TOML
version = 3
root = "$node/containerd/root"
state = "$node/containerd/state"
[grpc]
  address = "$socks/containerd.sock"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "$PAUSE_IMAGE"
[plugins."io.containerd.cri.v1.runtime"]
  # These machines withhold CAP_SYS_RESOURCE: no process may lower its
  # oom_score_adj below its parent's (0), which the kubelet asks for its
  # pause containers (-998) and Guaranteed pods (-997). Clamped instead, as
  # rootless nodes do.
  restrict_oom_score_adj = $(node_restrict_oom)
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$node/cni"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
    BinaryName = "$DIR/bin/runtime/runc"
TOML
	cat > "$node/cni/10-safeattach.conflist" << 'CNI'
{"cniVersion": "0.4.0", "name": "safeattach-node", "plugins": [
  {"type": "bridge", "bridge": "sa-cni0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "loopback"}]}
CNI
	PATH="$DIR/bin/runtime:$PATH" containerd --config "$node/containerd.toml" < /dev/null > "$node/containerd.log" 2>&1 &
	echo $! > "$node/containerd.pid"
	local deadline=$((SECONDS + READY_SECONDS))
	until "$DIR/bin/runtime/ctr" --address "$socks/containerd.sock" version > /dev/null 2>&1; do
		alive node/containerd || { echo "kube-node.sh: containerd exited:" >&2; tail -n 5 "$node/containerd.log" >&2; return 1; }
		((SECONDS < deadline)) || { echo "kube-node.sh: containerd not ready" >&2; return 1; }
		sleep 0.2
	done
	"$DIR/bin/runtime/ctr" --address "$socks/containerd.sock" -n k8s.io images import "$DIR/bin/pause.tar" > /dev/null
	cat > "$node/kubeconfig" << KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$secure
    certificate-authority: $RUN/ca.crt
users:
- name: node
  user:
    token: $NODE_TOKEN
contexts:
- name: local
  context: {cluster: local, user: node}
current-context: local
KC
	cat > "$node/kubelet.yaml" << YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $kport
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_CGROUP
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$socks/containerd.sock
staticPodPath: ""
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $RUN/pki/kubelet-client-ca.crt}
authorization: {mode: Webhook}
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
registerNode: true
YAML
	"$DIR/bin/kubelet" --config "$node/kubelet.yaml" --kubeconfig "$node/kubeconfig" \
		--hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --root-dir "$socks/kubelet" \
		--cert-dir "$socks/kubelet/pki" < /dev/null > "$node/kubelet.log" 2>&1 &
	echo $! > "$node/kubelet.pid"
	admin=$(sed -n 's/^[[:space:]]*token: //p' "$RUN/kubeconfig")
	deadline=$((SECONDS + READY_SECONDS))
	until curl -sf --max-time 5 --cacert "$RUN/ca.crt" -H "Authorization: Bearer $admin" \
		"https://127.0.0.1:$secure/api/v1/nodes/$NODE_NAME" 2> /dev/null | tr -d ' \n' | grep -q '"type":"Ready","status":"True"'; do
		alive node/kubelet || { echo "kube-node.sh: kubelet exited:" >&2; tail -n 5 "$node/kubelet.log" >&2; return 1; }
		((SECONDS < deadline)) || { echo "kube-node.sh: node not Ready after ${READY_SECONDS}s:" >&2; tail -n 5 "$node/kubelet.log" >&2; return 1; }
		sleep 0.5
	done
	node_service_route "$secure"
	printf 'NODE_NAME=%s\nNODE_IP=%s\nCONTAINERD_SOCKET=%s\nCTR=%s\n' "$NODE_NAME" "$NODE_IP" "$socks/containerd.sock" "$DIR/bin/runtime/ctr" > "$node/env"
	echo "kube-node.sh: node $NODE_NAME Ready (containerd $socks/containerd.sock)"
}

# node_service_route SECURE-PORT: what kube-proxy would do for the one
# service pods use here, "kubernetes" (10.0.0.1:443, in the API server's
# certificate): DNAT to the API server, from pods on the bridge and from
# host-network pods alike. In a chain of its own, which node_stop removes.
node_service_route() {
	local c=SAFEATTACH-NODE
	node_service_unroute
	iptables -t nat -N "$c"
	iptables -t nat -A "$c" -d 10.0.0.1/32 -p tcp --dport 443 -j DNAT --to-destination "$NODE_IP:$1"
	iptables -t nat -I PREROUTING -j "$c"
	iptables -t nat -I OUTPUT -j "$c"
}

node_service_unroute() {
	local c=SAFEATTACH-NODE
	command -v iptables > /dev/null || return 0
	while iptables -t nat -D PREROUTING -j "$c" 2> /dev/null; do :; done
	while iptables -t nat -D OUTPUT -j "$c" 2> /dev/null; do :; done
	iptables -t nat -F "$c" 2> /dev/null || true
	iptables -t nat -X "$c" 2> /dev/null || true
}

# node_stop: the kubelet first (it would restart what is killed), then
# every process of every pod, the runtime's shims, containerd, and the
# mounts they leave.
node_stop() {
	local socks
	socks=$(node_sockets)
	stop_proc node/kubelet
	node_kill_pods
	pkill -KILL -f -- "-address $socks/containerd.sock" 2> /dev/null || true
	stop_proc node/containerd
	node_service_unroute
	node_clean
}

# node_kill_pods: SIGKILL to every process in the node's cgroups (the
# kubelet's pods live nowhere else), until none is left.
node_kill_pods() {
	local root=/sys/fs/cgroup/pids/$NODE_CGROUP pids tries=0
	[ -d "$root" ] || root=/sys/fs/cgroup/$NODE_CGROUP
	[ -d "$root" ] || return 0
	while pids=$(find "$root" -name cgroup.procs -exec cat {} + 2> /dev/null) && [ -n "$pids" ] && ((tries++ < 100)); do
		# shellcheck disable=SC2086
		kill -KILL $pids 2> /dev/null || true
		sleep 0.1
	done
}

# node_clean: unmounts what containerd and the kubelet left under DIR (an
# earlier run killed mid-way too), deepest first, and removes the node's
# empty cgroups; nothing outside DIR and the node's cgroup is touched.
node_clean() {
	local m h p socks
	socks=$(node_sockets)
	for p in "$RUN/node/" "$socks/"; do
		awk -v p="$p" 'index($2, p) == 1 {print $2}' /proc/self/mounts | sort -r |
			while read -r m; do umount -l "$m" 2> /dev/null || true; done
	done
	rm -rf "$socks/kubelet"
	for h in /sys/fs/cgroup/*/"$NODE_CGROUP" /sys/fs/cgroup/"$NODE_CGROUP"; do
		[ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} + 2> /dev/null || true
	done
	rm -rf /var/lib/cni/networks/safeattach-node
}

package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"golang.org/x/net/netutil"
	"k8s.io/client-go/kubernetes"

	"github.com/safeattach/safeattach/fleet"
	"github.com/safeattach/safeattach/kube/podwatch"
)

// serveOnDemand serves the on-demand profiling API on cfg.OnDemand.Listen
// (nothing when it is empty) until ctx ends: the requests' contexts are
// ctx's, so that a signal ends the profiles running (each stops its
// profiler cleanly). The returned stop waits for them, at most 10 s.
func serveOnDemand(ctx context.Context, cfg *config, kubeconfig string, d *fleet.Daemon, log *slog.Logger) (stop func(), err error) {
	od := cfg.OnDemand
	if od.Listen == "" {
		return func() {}, nil
	}
	rc, err := podwatch.Config(kubeconfig, "")
	if err != nil {
		return nil, fmt.Errorf("on-demand API: %w", err)
	}
	// Reviews and Events have a rate of their own, above client-go's
	// default of 5 a second, which a flood of made-up tokens used up for
	// everyone (the handler limits each source's failures before that).
	rc.QPS, rc.Burst = reviewQPS, reviewBurst
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("on-demand API: %w", err)
	}
	ttl := time.Duration(od.CacheTTL)
	if ttl <= 0 {
		ttl = 10 * time.Second
	}
	authn, authz, err := fleet.DelegatingAuth(ctx, client, ttl, log)
	if err != nil {
		return nil, err
	}
	h, err := d.OnDemandHandler(fleet.OnDemandConfig{Authenticator: authn, Authorizer: authz,
		MaxDuration: time.Duration(od.MaxDuration), MaxOutput: od.MaxOutput, MaxConcurrent: od.MaxConcurrent, MaxPerUser: od.MaxPerUser,
		MaxPerNamespace: od.MaxPerNamespace, Events: client})
	if err != nil {
		return nil, err
	}
	cert, selfSigned, err := serverCert(od, cfg.Node)
	if err != nil {
		return nil, fmt.Errorf("on-demand API: %w", err)
	}
	l, err := net.Listen("tcp", od.Listen)
	if err != nil {
		return nil, err
	}
	l = boundedListener(l)
	srv := boundedServer(h)
	// HTTP/1.1 only: HTTP/2 carries up to 250 requests on one connection
	// past the cap, and reads request bodies ahead (none is read here).
	srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	// A client certificate is asked for, not checked here: the
	// authenticator verifies it against the cluster's client CA.
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert}
	srv.BaseContext = func(net.Listener) context.Context { return ctx }
	attrs := []any{"addr", l.Addr().String()}
	if selfSigned {
		sum := sha256.Sum256(cert.Certificate[0])
		attrs = append(attrs, "self_signed_sha256", hex.EncodeToString(sum[:]))
	}
	log.Info("on-demand API serving", attrs...)
	served := make(chan struct{})
	go func() {
		if err := srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("on-demand API stopped", "err", err)
		}
		close(served)
	}()
	return func() {
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
		<-served
	}, nil
}

// serverCert is the configured certificate, or a self-signed one for
// the node's name and the host's.
func serverCert(od onDemandConfig, node string) (tls.Certificate, bool, error) {
	if od.CertFile != "" {
		c, err := tls.LoadX509KeyPair(od.CertFile, od.KeyFile)
		return c, false, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	host, _ := os.Hostname()
	var names []string
	for _, n := range []string{node, host} {
		if n != "" {
			names = append(names, n)
		}
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, false, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "safeattach-daemon " + node},
		NotBefore: now.Add(-time.Minute), NotAfter: now.AddDate(1, 0, 0), DNSNames: names,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, true, nil
}

// Bounds of the node agent's HTTP servers, against clients that hold
// connections open: each idle connection costs tens of KiB, and the
// node agent runs in a memory limit of its own.
const (
	idleTimeout    = time.Minute
	maxHeaderBytes = 64 << 10 // a bearer token with many groups fits
	// maxConns caps the open connections of one listener: a caller
	// who holds them all holds them only for idleTimeout at most
	// between requests, each of which is judged.
	maxConns = 256
)

// boundedServer is an http.Server for h with the node agent's bounds.
// It has no read or write timeout over a whole request: a profile is
// streamed for up to its duration (the on-demand handler bounds each
// write instead).
func boundedServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes}
}

// The rate of the on-demand API's requests to the API server.
const (
	reviewQPS   = 50
	reviewBurst = 100
)

// boundedListener caps l's open connections at maxConns, and each
// source address's at maxConnsPerSource: one caller on the pod network
// cannot hold them all. (A port-forward's connections all come from
// the pod's loopback: its users share that source's.)
func boundedListener(l net.Listener) net.Listener {
	return &perSourceListener{Listener: netutil.LimitListener(l, maxConns), open: map[string]int{}}
}

// maxConnsPerSource bounds one source address's open connections.
const maxConnsPerSource = 64

type perSourceListener struct {
	net.Listener
	mu   sync.Mutex
	open map[string]int
}

// Accept closes at once a connection past its source's share.
func (l *perSourceListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		l.mu.Lock()
		if l.open[src] >= maxConnsPerSource {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.open[src]++
		l.mu.Unlock()
		return &sourceConn{Conn: c, l: l, src: src}, nil
	}
}

type sourceConn struct {
	net.Conn
	l    *perSourceListener
	src  string
	once sync.Once
}

func (c *sourceConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.open[c.src]--; c.l.open[c.src] <= 0 {
			delete(c.l.open, c.src)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

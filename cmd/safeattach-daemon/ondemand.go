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
	"time"

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
		MaxDuration: time.Duration(od.MaxDuration), MaxOutput: od.MaxOutput, MaxConcurrent: od.MaxConcurrent, MaxPerUser: od.MaxPerUser, Events: client})
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
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		// A client certificate is asked for, not checked here: the
		// authenticator verifies it against the cluster's client CA.
		TLSConfig:   &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert},
		BaseContext: func(net.Listener) context.Context { return ctx }}
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

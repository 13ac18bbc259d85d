package kubeapi

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AudienceToken is a token of the existing ServiceAccount ns/name made
// by TokenRequest for audience: genuine, signed by the API server, and
// meant for someone else.
func (a *API) AudienceToken(t testing.TB, ns, name, audience string) string {
	t.Helper()
	tr, err := a.Client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), name,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{Audiences: []string{audience}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// SignedToken is a token of the existing ServiceAccount ns/name as
// TokenRequest makes them (the same issuer, audience and claims), signed
// with the API server's own service-account key, valid from issued to
// expires: what TokenRequest will not make, a token already expired
// (its shortest is 10 minutes). The same call with a future expiry is
// the control that it is otherwise accepted.
func (a *API) SignedToken(t testing.TB, ns, name string, issued, expires time.Time) string {
	t.Helper()
	sa, err := a.Client.CoreV1().ServiceAccounts(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(a.Dir, "run", "pki", "sa.key"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("sa.key: no PEM")
	}
	key, err := parseRSAKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	// The key ID the API server gives its key: the SHA-256 of the public
	// key's DER, base64url.
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	kid := sha256.Sum256(der)
	const issuer = "https://kubernetes.default.svc" // scripts/kube-apiserver.sh's --service-account-issuer
	header := map[string]string{"alg": "RS256", "kid": base64.RawURLEncoding.EncodeToString(kid[:])}
	claims := map[string]any{
		"iss": issuer, "aud": []string{issuer}, "sub": "system:serviceaccount:" + ns + ":" + name,
		"iat": issued.Unix(), "nbf": issued.Unix(), "exp": expires.Unix(), "jti": Name("jti"),
		"kubernetes.io": map[string]any{"namespace": ns, "serviceaccount": map[string]string{"name": name, "uid": string(sa.UID)}},
	}
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(header) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// parseRSAKey reads openssl genrsa's key: PKCS#8 (OpenSSL 3) or PKCS#1.
func parseRSAKey(der []byte) (*rsa.PrivateKey, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		if rk, ok := k.(*rsa.PrivateKey); ok {
			return rk, nil
		}
	}
	return x509.ParsePKCS1PrivateKey(der)
}

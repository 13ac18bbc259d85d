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
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
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
	key := a.signingKey(t, "sa.key")
	// The key ID the API server gives its key: the SHA-256 of the public
	// key's DER, base64url.
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	kid := sha256.Sum256(der)
	const issuer = "https://kubernetes.default.svc" // scripts/kube-apiserver.sh's --service-account-issuer
	return signJWT(t, key, base64.RawURLEncoding.EncodeToString(kid[:]), map[string]any{
		"iss": issuer, "aud": []string{issuer}, "sub": "system:serviceaccount:" + ns + ":" + name,
		"iat": issued.Unix(), "nbf": issued.Unix(), "exp": expires.Unix(), "jti": Name("jti"),
		"kubernetes.io": map[string]any{"namespace": ns, "serviceaccount": map[string]string{"name": name, "uid": string(sa.UID)}},
	})
}

// OIDCAudience is the client ID the API server's JWT authenticator
// accepts ID tokens for (scripts/kube-apiserver.sh).
const OIDCAudience = "safeattach-oidc"

// OIDCToken is an ID token of the test cluster's OpenID Connect issuer
// (scripts/kube-apiserver.sh runs it) for subject sub in groups, for
// audience, valid for ten minutes: what an OIDC login (kubelogin, a
// kubeconfig's id-token) hands kubectl. The API server knows its
// holder as user oidc:<sub> in groups oidc:<group>.
func (a *API) OIDCToken(t testing.TB, sub string, groups []string, audience string) string {
	t.Helper()
	issuer, err := os.ReadFile(filepath.Join(a.Dir, "run", "oidc-issuer-url"))
	if err != nil {
		t.Fatalf("the test cluster's OIDC issuer: %v", err)
	}
	now := time.Now()
	return signJWT(t, a.signingKey(t, "oidc.key"), "safeattach-test-oidc", map[string]any{ // oidcissuer.KeyID
		"iss": strings.TrimSpace(string(issuer)), "aud": audience, "sub": sub, "groups": groups,
		"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
	})
}

// signingKey is the RSA key of the test cluster's pki directory named.
func (a *API) signingKey(t testing.TB, name string) *rsa.PrivateKey {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(a.Dir, "run", "pki", name))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", name)
	}
	key, err := parseRSAKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// signJWT is a JWT of claims signed RS256 with key, its header naming kid.
func signJWT(t testing.TB, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(map[string]string{"alg": "RS256", "typ": "JWT", "kid": kid}) + "." + enc(claims)
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

// OIDCUser is an ID token for sub in groups (OIDCToken, for the API
// server's audience), once the API server knows its holder as
// oidc:<sub>: its JWT authenticator fetches the issuer's keys in the
// background after it starts, so a test right after make test started
// the server waits here, at most a minute.
func (a *API) OIDCUser(t testing.TB, sub string, groups ...string) string {
	t.Helper()
	token := a.OIDCToken(t, sub, groups, OIDCAudience)
	cfg := rest.AnonymousClientConfig(a.Config)
	cfg.BearerToken = token
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var last error
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		r, err := client.AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err == nil {
			if got := r.Status.UserInfo.Username; got != "oidc:"+sub {
				t.Fatalf("the API server knows the ID token's holder as %q, want oidc:%s", got, sub)
			}
			return token
		}
		last = err
	}
	t.Fatalf("the API server does not accept the test issuer's ID tokens after a minute: %v (see run/apiserver.log, run/oidc-issuer.log)", last)
	return ""
}

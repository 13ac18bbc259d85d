package main

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net/http"
	"os"
	"time"
)

// KeyID is the key ID of the one signing key, as tokens' headers name it.
const KeyID = "safeattach-test-oidc"

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	issuer := flag.String("issuer", "", "the issuer URL (https://host:port), as tokens name it")
	cert := flag.String("tls-cert", "", "serving certificate (PEM)")
	key := flag.String("tls-key", "", "serving key (PEM)")
	pub := flag.String("signing-public-key", "", "the tokens' RSA public key (PEM, PKIX)")
	flag.Parse()
	if err := serve(*listen, *issuer, *cert, *key, *pub); err != nil {
		log.Fatal(err)
	}
}

func serve(listen, issuer, cert, key, pub string) error {
	if issuer == "" || cert == "" || key == "" || pub == "" {
		return errors.New("-issuer, -tls-cert, -tls-key and -signing-public-key are required")
	}
	rsaKey, err := readPublicKey(pub)
	if err != nil {
		return err
	}
	discovery, err := json.Marshal(map[string]any{
		"issuer": issuer, "jwks_uri": issuer + "/keys",
		"response_types_supported": []string{"id_token"}, "subject_types_supported": []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	})
	if err != nil {
		return err
	}
	keys, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "alg": "RS256", "use": "sig", "kid": KeyID,
		"n": base64.RawURLEncoding.EncodeToString(rsaKey.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(rsaKey.E)).Bytes()),
	}}})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", answer(discovery))
	mux.HandleFunc("GET /keys", answer(keys))
	srv := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return srv.ListenAndServeTLS(cert, key)
}

func answer(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}
}

func readPublicKey(path string) (*rsa.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an RSA key", path)
	}
	return r, nil
}

// Command oidcissuer is the OpenID Connect issuer of the test cluster's
// OIDC users: scripts/kube-apiserver.sh runs it beside the API server,
// whose JWT authenticator (--authentication-config) trusts it, and tests
// sign those users' ID tokens with its key (kubeapi.OIDCToken). It
// serves only what the API server fetches: the discovery document and
// the key set, over TLS on loopback. It signs nothing itself.
package main

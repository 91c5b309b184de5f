package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/upstream"
)

// A pushed Set compiles like a file: named target ports resolve per
// endpoint, terminating endpoints serve only when nothing else does, and
// weight 0 means 1.
func TestCompilePushedSet(t *testing.T) {
	base, err := Parse([]byte("version: v1\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	set := &meshapi.Set{Services: map[string]*meshapi.ServiceState{
		"default/ratings": {
			Service: &meshapi.Service{Namespace: "default", Name: "ratings", Addresses: []string{"10.96.0.12"},
				Ports: []meshapi.ServicePort{{Name: "http", Port: 80}, {Name: "db", Port: 5432, TargetPort: 15432, Protocol: meshapi.ProtocolOpaque}}},
			Endpoints: []meshapi.Endpoint{
				{Address: "10.0.1.5", Ports: map[string]uint16{"http": 9080}, Meshed: true, Identity: "spiffe://td/ns/default/sa/ratings"},
				{Address: "10.0.1.6", Ports: map[string]uint16{"http": 9081}, Weight: 3},
				{Address: "10.0.1.7", Ports: map[string]uint16{"http": 9082}, Terminating: true},
			},
		},
		"default/old": {
			Service:   &meshapi.Service{Namespace: "default", Name: "old", Addresses: []string{"10.96.0.13"}, Ports: []meshapi.ServicePort{{Port: 80, TargetPort: 8080}}},
			Endpoints: []meshapi.Endpoint{{Address: "10.0.2.1", Terminating: true}},
		},
		"default/nosvc": {Endpoints: []meshapi.Endpoint{{Address: "10.0.3.1"}}},
	}}
	tb := Compile(base.Config, set, "controller", upstream.NewRegistry())
	http := tb.Target(netip.MustParseAddrPort("10.96.0.12:80"))
	if http == nil || http.Label != "ratings.default" || len(http.Endpoints) != 2 {
		t.Fatalf("target %+v", http)
	}
	e0, e1 := http.Endpoints[0], http.Endpoints[1]
	if e0.Address() != "10.0.1.5:9080" || !e0.Meshed || e0.Key().Identity != "spiffe://td/ns/default/sa/ratings" || e0.Weight != 1 ||
		e1.Address() != "10.0.1.6:9081" || e1.Weight != 3 || e1.Meshed {
		t.Errorf("endpoints %+v %+v", e0, e1)
	}
	db := tb.Target(netip.MustParseAddrPort("10.96.0.12:5432"))
	if !db.Opaque() || len(db.Endpoints) != 2 || db.Endpoints[0].Address() != "10.0.1.5:15432" {
		t.Errorf("db target %+v", db)
	}
	if old := tb.Target(netip.MustParseAddrPort("10.96.0.13:80")); len(old.Endpoints) != 1 {
		t.Error("terminating endpoints must serve when no other does")
	}
	if len(tb.Targets()) != 3 {
		t.Errorf("%d targets", len(tb.Targets()))
	}
}

// Tables compiled one after another share the registry's entries, so the
// live state of an endpoint survives a push; an endpoint no table in
// force names leaves the registry.
func TestStorePushSharesEndpointState(t *testing.T) {
	st := &Store{}
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte(valid), 0o644)
	t1, err := st.Reload(path)
	if err != nil {
		t.Fatal(err)
	}
	ep := t1.Target(netip.MustParseAddrPort("10.96.0.12:80")).Endpoints[0]
	ep.Acquire()
	set := t1.Config.Set()
	set.Services["default/ratings"].Endpoints = set.Services["default/ratings"].Endpoints[:1]
	t2 := st.Push(set, "controller")
	if st.Load() != t2 || t2.Registry() != t1.Registry() {
		t.Fatal("push did not compile into the same registry")
	}
	got := t2.Target(netip.MustParseAddrPort("10.96.0.12:80")).Endpoints
	if len(got) != 1 || got[0].Endpoint != ep.Endpoint || got[0].InFlight() != 1 {
		t.Fatalf("live state lost across the push: %+v", got)
	}
	// One endpoint left, on the service's two ports.
	if n := len(t2.Registry().Endpoints()); n != 2 {
		t.Errorf("%d registry entries after the push, want 2", n)
	}
	if len(t2.Config.Services) != 0 {
		t.Error("the file's services linger in the pushed table's settings")
	}
}

func testAnchor(t *testing.T) string {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "anchor"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestControllerBootstrap(t *testing.T) {
	anchor := testAnchor(t)
	doc := func(c string) []byte { return []byte("version: v\ncontroller: " + c + "\n") }
	ok := `{address: "meshctl-controller.meshctl-system.svc:15112", serverIdentity: "spiffe://td/ns/meshctl-system/sa/meshctl-controller", trustAnchors: [` + strings.ReplaceAll(quote(anchor), "\n", `\n`) + `], tokenFile: /var/run/secrets/meshctl.dev/token}`
	tb, err := Parse(doc(ok), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c := tb.Config.Controller; c == nil || c.Address != "meshctl-controller.meshctl-system.svc:15112" || len(c.TrustAnchors) != 1 {
		t.Errorf("controller %+v", c)
	}
	for _, tc := range []struct{ c, want string }{
		{`{address: "nohost", trustAnchors: ["x"], tokenFile: /t}`, "controller.address: want host:port"},
		{`{address: ":15112", trustAnchors: ["x"], tokenFile: /t}`, "controller.address"},
		{`{address: "c:0", trustAnchors: ["x"], tokenFile: /t}`, "controller.address"},
		{`{address: "c:15112", tokenFile: /t}`, "controller.trustAnchors: at least one"},
		{`{address: "c:15112", trustAnchors: ["not pem"], tokenFile: /t}`, "controller.trustAnchors[0]: not a PEM CERTIFICATE"},
		{`{address: "c:15112", trustAnchors: [` + strings.ReplaceAll(quote(anchor), "\n", `\n`) + `]}`, "controller.tokenFile: want an absolute path"},
		{`{address: "c:15112", serverIdentity: bob, trustAnchors: ["x"], tokenFile: /t}`, "controller.serverIdentity"},
	} {
		_, err := Parse(doc(tc.c), "c.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.c, err, tc.want)
		}
	}
}

func quote(s string) string { return `"` + s + `"` }

// With a controller, a reload takes the file's local settings and keeps
// the pushed services instead of the file's; a bad file changes nothing.
func TestReloadPushedKeepsThePushedServices(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("version: v1\nservices:\n- {name: file, namespace: x, addresses: [10.96.0.50], ports: [{port: 80}], endpoints: [{address: 10.0.9.9}]}\n"), 0o644)
	st := &Store{}
	if _, err := st.Reload(path); err != nil {
		t.Fatal(err)
	}
	pushed := &meshapi.Set{Services: map[string]*meshapi.ServiceState{"default/web": {
		Service:   &meshapi.Service{Namespace: "default", Name: "web", Addresses: []string{"10.96.0.12"}, Ports: []meshapi.ServicePort{{Port: 80, TargetPort: 8080}}},
		Endpoints: []meshapi.Endpoint{{Address: "10.0.1.5"}},
	}}}
	st.Push(pushed, "controller")
	os.WriteFile(path, []byte("version: v2\ninbound: {mtls: strict}\nservices:\n- {name: file, namespace: x, addresses: [10.96.0.50], ports: [{port: 80}], endpoints: [{address: 10.0.9.9}]}\n"), 0o644)
	tb, err := st.ReloadPushed(path, pushed)
	if err != nil {
		t.Fatal(err)
	}
	if st.Load() != tb || tb.Version() != "v2" || tb.InboundMTLS(8080) != meshapi.MTLSStrict {
		t.Errorf("the file's local settings did not take: version %q, mTLS %q", tb.Version(), tb.InboundMTLS(8080))
	}
	if tb.Target(netip.MustParseAddrPort("10.96.0.12:80")) == nil || tb.Target(netip.MustParseAddrPort("10.96.0.50:80")) != nil {
		t.Error("the reload did not keep the pushed services in place of the file's")
	}
	os.WriteFile(path, []byte("version: v3\nbogus: x\n"), 0o644)
	if _, err := st.ReloadPushed(path, pushed); err == nil || st.Load() != tb {
		t.Errorf("a bad file was taken, or replaced the table: %v", err)
	}
}

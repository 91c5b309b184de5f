package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/adminapi"
	"github.com/meshctl/mesh/internal/controller/testcert"
	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/testenv"
	"github.com/meshctl/mesh/internal/testenv/netns"
	"github.com/meshctl/mesh/internal/wellknown"
)

// Identity rotation under steady traffic, in a world of its own whose
// MeshConfig gives certificates a lifetime of one minute (the shortest
// it accepts), so that every proxy renews about 42 s after its last
// certificate: the test waits for renewals, it does not fake a clock.
// Then the trust anchor is replaced by the documented procedure
// (docs/identity.md), and the mesh-wide mTLS mode is switched to strict.
var rotation = meshOptions{
	meshNS: "e2e-rot-system", appNS: "e2e-rot", subnet: "10.237.0.0/24",
	values: map[string]any{"identity": map[string]any{"certificateLifetime": "1m"}},
	// The client's own configuration says permissive: it must win over a
	// strict mesh-wide mode.
	mtls: map[string]string{"client": "permissive"},
}

var rotated = []string{"client", "server-a", "server-b"}

func TestMeshRotation(t *testing.T) {
	start := time.Now()
	w := setUpMesh(t, rotation)
	for _, name := range rotated {
		waitProxyReady(t, w.pods[name])
	}
	server := netip.AddrPortFrom(w.serverVIP, 80)
	client := netip.AddrPortFrom(w.clientVIP, 80)
	w.eventuallyCall(t, "http1", server, "client-id="+spiffeID(w.appNS, "client"))
	w.eventuallyCallFrom(t, w.pods["server-a"], "http1", client, "client-id="+spiffeID(w.appNS, "server"))
	t.Logf("set up in %s", time.Since(start).Round(time.Second))

	// Both directions, each through a client and a server proxy: the
	// client to the server replicas, and server-a to the client.
	traffic := []*steadyTraffic{w.startSteady(t, "client", server), w.startSteady(t, "server-a", client)}
	stopped := false
	stopTraffic := func(t *testing.T) {
		if stopped {
			return
		}
		stopped = true
		for _, s := range traffic {
			s.stopAndCheck(t)
		}
	}
	defer stopTraffic(t)

	t.Run("a certificate lifetime of a minute rotates with no failed request", func(t *testing.T) {
		began := time.Now()
		first := map[string]adminapi.Identity{}
		for _, name := range rotated {
			first[name] = identityOf(t, w.pods[name])
		}
		w.waitEveryProxy(t, 80*time.Second, "a renewed certificate", func(name string, id adminapi.Identity) bool {
			return id.SerialNumber != first[name].SerialNumber && id.NotAfter.After(first[name].NotAfter)
		})
		for _, name := range rotated {
			id := identityOf(t, w.pods[name])
			if life := id.NotAfter.Sub(id.LastRenewal); life > time.Minute+5*time.Second {
				t.Errorf("%s: a certificate valid %s after its renewal, want the MeshConfig's 1m", name, life)
			}
			// The first certificate and one renewal at about 42 s: more
			// would be a proxy renewing in a loop (the backdated
			// NotBefore counted as lifetime).
			if id.RenewalsTotal > 2 {
				t.Errorf("%s: %d certificates in about a minute, want 2", name, id.RenewalsTotal)
			}
		}
		t.Logf("every proxy renewed in %s", time.Since(began).Round(time.Second))
	})

	t.Run("a trust-anchor rotation completes with no failed request", func(t *testing.T) {
		began := time.Now()
		next, err := pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: "cluster.local"})
		if err != nil {
			t.Fatal(err)
		}
		oldAnchor, newAnchor := keyID(w.ident.TrustAnchors[0].SubjectKeyId), keyID(next.TrustAnchors[0].SubjectKeyId)

		// 1. The new anchor joins the old one in the bundle.
		w.writeAnchors(t, w.ident.TrustAnchorsPEM, next.TrustAnchorsPEM)
		w.waitEveryProxy(t, 15*time.Second, "both anchors", anchorsAre(oldAnchor, newAnchor))
		// 2. The issuer is replaced by one of the new anchor.
		testcert.WriteSecretDir(t, w.dirs["issuer"], next.IssuerCertPEM, next.IssuerKeyPEM)
		newIssuer := keyID(next.Issuer().SubjectKeyId)
		w.waitEveryProxy(t, 80*time.Second, "a certificate of the new issuer", func(_ string, id adminapi.Identity) bool {
			return id.IssuerKeyID == newIssuer
		})
		t.Logf("every proxy holds a certificate of the new issuer %s after the switch", time.Since(began).Round(time.Second))
		// 3. The old anchor goes.
		w.writeAnchors(t, next.TrustAnchorsPEM)
		w.waitEveryProxy(t, 15*time.Second, "the new anchor alone", anchorsAre(newAnchor))
		// Connections open since before go on (the steady traffic); new
		// ones verify against the new anchor alone. server-b has not
		// called the client yet, so this is a new handshake between two
		// proxies. (That a TLS session from before is not resumed is
		// TestResumptionDoesNotOutliveTheAnchorOfItsCertificates's, in
		// internal/proxy/identity: the proxies' pools keep these
		// connections open, so no resumption happens here.)
		handshakes := w.meshHandshakes(t)
		for _, kind := range []string{"http1", "h2c"} {
			w.eventuallyCallFrom(t, w.pods["server-b"], kind, client, "client-id="+spiffeID(w.appNS, "server"))
		}
		if n := w.meshHandshakes(t); n <= handshakes {
			t.Errorf("no new mesh handshake after the old anchor went (%v before, %v after)", handshakes, n)
		}
		time.Sleep(2 * time.Second)
		stopTraffic(t)
		t.Logf("rotation done in %s", time.Since(began).Round(time.Second))
	})

	t.Run("a mesh-wide strict mode refuses plaintext without a restart", func(t *testing.T) {
		began := time.Now()
		plain := w.pods["plain"]
		serverA := netip.AddrPortFrom(w.pods["server-a"].Addr, portHTTP)
		clientPod := netip.AddrPortFrom(w.client.Addr, portHTTP)
		if out, err := w.tryCallFrom(plain, "http1", serverA); err != nil || !strings.Contains(out, "status=200") {
			t.Fatalf("plaintext in the default permissive mode: %q %v", out, err)
		}
		w.setMeshMTLS(t, "strict")
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := w.tryCallFrom(plain, "http1", serverA)
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("plaintext still reaches server-a 10 s after the MeshConfig went strict\ndiscovery: %s", adminGet(t, w.pods["server-a"], "/discovery"))
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("strict within %s of the MeshConfig update", time.Since(began).Round(100*time.Millisecond))
		if c := scrapeText(t, w.pods["server-a"]); !strings.Contains(c, `reason="mtls_required"`) {
			t.Errorf("server-a did not count the refusal")
		}
		// The client's own configuration (permissive) wins.
		if out, err := w.tryCallFrom(plain, "http1", clientPod); err != nil || !strings.Contains(out, "status=200") {
			t.Errorf("plaintext to a pod whose own configuration is permissive: %q %v", out, err)
		}
		// Mesh traffic is mTLS, which strict accepts.
		w.eventuallyCall(t, "http1", server, "client-id="+spiffeID(w.appNS, "client"))

		w.setMeshMTLS(t, "permissive")
		deadline = time.Now().Add(10 * time.Second)
		for {
			out, err := w.tryCallFrom(plain, "http1", serverA)
			if err == nil && strings.Contains(out, "status=200") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("plaintext still refused 10 s after the MeshConfig went back to permissive: %q %v", out, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	t.Logf("TestMeshRotation took %s", time.Since(start).Round(time.Second))
}

// eventuallyCallFrom is eventuallyCall from pod p's application.
func (w *meshWorld) eventuallyCallFrom(t *testing.T, p *netns.Pod, kind string, dst netip.AddrPort, want string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := w.tryCallFrom(p, kind, dst)
		if err == nil && strings.Contains(out, want) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s from %s to %s: want %q, last answer %q (%v)", kind, p.Name, dst, want, out, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// steadyTraffic is the app's "steady" role running in a pod.
type steadyTraffic struct {
	from string
	cmd  *exec.Cmd
	out  *testenv.Output
}

func (w *meshWorld) startSteady(t *testing.T, from string, dst netip.AddrPort) *steadyTraffic {
	t.Helper()
	s := &steadyTraffic{from: from, out: &testenv.Output{}}
	s.cmd = exec.Command(filepath.Join(w.bin, "app"), dst.String())
	s.cmd.Env = append(os.Environ(), appEnv+"=steady")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: appUID, Gid: appUID}}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := w.pods[from].Start(s.cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			s.cmd.Wait()
		}
	})
	return s
}

// stopAndCheck stops the traffic and fails the test on any failed
// request, or if a loop made too few to mean anything.
func (s *steadyTraffic) stopAndCheck(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	if err := s.cmd.Wait(); err != nil {
		t.Errorf("steady traffic from %s: %v\n%s", s.from, err, s.out.String())
		return
	}
	summaries := 0
	for _, line := range strings.Split(s.out.String(), "\n") {
		var loop string
		var ok, failed int
		if n, _ := fmt.Sscanf(line, "steady %s ok=%d failed=%d", &loop, &ok, &failed); n != 3 {
			continue
		}
		summaries++
		t.Logf("steady traffic from %s, %s: %d requests, %d failed", s.from, loop, ok+failed, failed)
		if failed > 0 || ok < 100 {
			t.Errorf("steady traffic from %s, %s: %d ok, %d failed\n%s", s.from, loop, ok, failed, s.out.String())
		}
	}
	if summaries != 3 {
		t.Errorf("steady traffic from %s: no summary\n%s", s.from, s.out.String())
	}
}

func identityOf(t *testing.T, p *netns.Pod) adminapi.Identity {
	t.Helper()
	body := adminGet(t, p, "/identity")
	var id adminapi.Identity
	if err := json.Unmarshal([]byte(body), &id); err != nil {
		t.Fatalf("%s /identity: %v: %q", p.Name, err, body)
	}
	return id
}

// waitEveryProxy waits until every rotated proxy's /identity passes ok.
func (w *meshWorld) waitEveryProxy(t *testing.T, timeout time.Duration, what string, ok func(name string, id adminapi.Identity) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, name := range rotated {
		for {
			id := identityOf(t, w.pods[name])
			if ok(name, id) {
				break
			}
			if time.Now().After(deadline) {
				b, _ := json.MarshalIndent(id, "", "  ")
				t.Fatalf("the %s proxy has not got %s in %s:\n%s", name, what, timeout, b)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
}

func anchorsAre(keyIDs ...string) func(string, adminapi.Identity) bool {
	return func(_ string, id adminapi.Identity) bool {
		var got []string
		for _, a := range id.Trust.Anchors {
			got = append(got, a.KeyID)
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(keyIDs))
		return slices.Equal(got, want)
	}
}

func keyID(b []byte) string { return hex.EncodeToString(b) }

// writeAnchors replaces the controller's mounted trust-anchors ConfigMap,
// as the kubelet does after `kubectl apply` of a new one.
func (w *meshWorld) writeAnchors(t *testing.T, pems ...[]byte) {
	t.Helper()
	testcert.WriteMountDir(t, w.dirs["anchors"], map[string][]byte{"ca-bundle.crt": bytes.Join(pems, nil)})
}

// meshHandshakes is the number of mesh TLS connections the rotated
// proxies accepted so far.
func (w *meshWorld) meshHandshakes(t *testing.T) float64 {
	t.Helper()
	var n float64
	for _, name := range rotated {
		for _, line := range strings.Split(scrapeText(t, w.pods[name]), "\n") {
			if !strings.HasPrefix(line, "meshproxy_mtls_connections_total{") {
				continue
			}
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				n += v
			}
		}
	}
	return n
}

// setMeshMTLS sets the MeshConfig's spec.mtls.mode, as an operator would.
func (w *meshWorld) setMeshMTLS(t *testing.T, mode string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kubectl(t, ctx, w.env, nil, "-n", w.meshNS, "patch", "meshconfig", wellknown.MeshConfigName,
		"--type=merge", "-p", `{"spec":{"mtls":{"mode":"`+mode+`"}}}`)
}

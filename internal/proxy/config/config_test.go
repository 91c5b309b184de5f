package config

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const valid = `
version: v1
workload: {name: reviews, namespace: default, identity: "spiffe://cluster.local/ns/default/sa/reviews"}
outbound: {opaquePorts: [5432]}
services:
- name: ratings
  namespace: default
  addresses: [10.96.0.12, "fd00::12"]
  ports: [{port: 80, targetPort: 9080}, {port: 5000, protocol: opaque}]
  endpoints:
  - {address: 10.0.1.5, identity: "spiffe://cluster.local/ns/default/sa/ratings"}
  - {address: 10.0.2.7, weight: 3}
  - {address: 10.0.3.9, weight: 0}
`

func TestParseAppliesDefaultsAndIndexes(t *testing.T) {
	s, err := Parse([]byte(valid), "valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := s.Config
	if c.Inbound.Address != ":15101" || c.Outbound.Address != ":15100" || c.Inbound.ForwardTo != ForwardOriginal {
		t.Errorf("listener defaults: %+v %+v", c.Inbound, c.Outbound)
	}
	if c.Limits.MaxHeaderCount != 100 || c.Limits.MaxHeaderBytes != 60<<10 || c.Limits.MaxConcurrentStreams != 100 ||
		c.Limits.DetectTimeout.D() != time.Second || c.Limits.RequestTimeout.D() != 0 {
		t.Errorf("limit defaults: %+v", c.Limits)
	}
	tg := s.Target(netip.MustParseAddrPort("10.96.0.12:80"))
	if tg == nil || tg.Label != "ratings.default" || tg.Port != 80 {
		t.Fatalf("target: %+v", tg)
	}
	if len(tg.Endpoints) != 2 || tg.Endpoints[0].Address() != "10.0.1.5:9080" || tg.Endpoints[1].Weight != 3 {
		t.Errorf("endpoints (weight 0 left out): %+v %+v", tg.Endpoints[0], tg.Endpoints[1])
	}
	if s.Target(netip.MustParseAddrPort("[fd00::12]:80")) != tg {
		t.Error("IPv6 address not indexed")
	}
	// An IPv4-mapped destination, as a dual-stack socket reports it.
	if s.Target(netip.MustParseAddrPort("[::ffff:10.96.0.12]:80")) != tg {
		t.Error("mapped address not found")
	}
	if s.Target(netip.MustParseAddrPort("10.96.0.12:81")) != nil {
		t.Error("unknown port matched")
	}
	if tg := s.Target(netip.MustParseAddrPort("10.96.0.12:5000")); !tg.Opaque() {
		t.Errorf("protocol %q", tg.Protocol)
	}
	if !s.OutboundOpaque(5432) || s.InboundOpaque(80) {
		t.Error("opaque ports")
	}
}

func TestValidationNamesFileAndKey(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{`services: []`, "version: required"},
		{"version: v\nbogus: 1", "proxy.yaml:2:1: bogus: unknown key"},
		{"version: v\nlimits: {maxHeaderBytes: 10}", "limits.maxHeaderBytes: must be at least 1024"},
		{"version: v\nlimits: {detectTimeout: -1s}", "limits.detectTimeout: must be positive"},
		{"version: v\nlimits: {idleTimeout: 10}", "want a duration string"},
		{"version: v\ninbound: {forwardTo: elsewhere}", "inbound.forwardTo: want"},
		{"version: v\noutbound: {opaquePorts: [0]}", "outbound.opaquePorts[0]: want a port"},
		{"version: v\ninbound: {connectProxyPorts: [70000]}", "inbound.connectProxyPorts[0]: want a port"},
		{"version: v\ninbound: {address: nonsense}", "inbound.address: want host:port"},
		{"version: v\nservices: [{name: a, namespace: b, addresses: [x], ports: [{port: 1}]}]", "services[0].addresses[0]: want an IP address"},
		{"version: v\nservices: [{name: a, namespace: b, addresses: [10.0.0.1], ports: [{port: 1, targetPort: 70000}]}]", "services[0].ports[0].targetPort: want a port 1-65535, got 70000"},
		{"version: v\nservices: [{name: a, namespace: b, addresses: [10.0.0.1], ports: [{port: 1, protocol: http}]}]", "services[0].ports[0].protocol"},
		{"version: v\nservices: [{name: a, namespace: b, addresses: [10.0.0.1], ports: [{port: 1}], endpoints: [{address: 10.1.1.1, identity: bob}]}]", "services[0].endpoints[0].identity: want a SPIFFE id"},
		{"version: v\nservices: [{name: a, namespace: b, addresses: [10.0.0.1], ports: [{port: 1}], endpoints: [{address: 10.1.1.1, weight: -1}]}]", "services[0].endpoints[0].weight"},
		{"version: v\nservices: [{name: a, namespace: b, addresses: [10.0.0.1], ports: [{port: 1}]}, {name: c, namespace: b, addresses: [10.0.0.1], ports: [{port: 1}]}]", "services[1].ports[0]: 10.0.0.1:1 is already taken by service a.b"},
		{"version: v\nservices: [{name: a, namespace: b, addresses: [10.0.0.1], ports: [{port: 1}]}, {name: a, namespace: b, addresses: [10.0.0.2], ports: [{port: 1}]}]", "services[1]: service a.b is listed twice"},
		{"version: v\nservices: [{namespace: b}]", "services[0].name: required"},
	} {
		_, err := Parse([]byte(tc.doc), "/etc/mesh/proxy.yaml")
		if err == nil {
			t.Errorf("%q: no error", tc.doc)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "/etc/mesh/proxy.yaml") {
			t.Errorf("%q: error %q lacks %q or the file name", tc.doc, err, tc.want)
		}
	}
}

func TestStoreReloadKeepsOldSnapshotOnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte(valid), 0o644)
	st := &Store{}
	s1, err := st.Reload(path)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte("version: v2\nbogus: x\n"), 0o644)
	if _, err := st.Reload(path); err == nil {
		t.Fatal("invalid file accepted")
	}
	if st.Load() != s1 {
		t.Fatal("invalid file replaced the snapshot")
	}
	os.WriteFile(path, []byte(strings.Replace(valid, "version: v1", "version: v2", 1)), 0o644)
	s2, err := st.Reload(path)
	if err != nil || st.Load() != s2 || s2.Version() != "v2" {
		t.Fatalf("reload: %v", err)
	}
	if ok, failed := st.Reloads(); ok != 2 || failed != 1 {
		t.Errorf("reloads ok %d failed %d", ok, failed)
	}
}

func TestJSONIsAccepted(t *testing.T) {
	if _, err := Parse([]byte(`{"version":"j","services":[{"name":"a","namespace":"b","addresses":["10.0.0.1"],"ports":[{"port":80}]}]}`), "c.json"); err != nil {
		t.Fatal(err)
	}
}

func TestOpaquePortDefaults(t *testing.T) {
	s, err := Parse([]byte("version: v\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !s.OutboundOpaque(5432) || !s.InboundOpaque(3306) || s.OutboundOpaque(80) {
		t.Error("default opaque ports not applied")
	}
	s, err = Parse([]byte("version: v\noutbound: {opaquePorts: []}\ninbound: {opaquePorts: [9000]}\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.OutboundOpaque(5432) || s.InboundOpaque(3306) || !s.InboundOpaque(9000) {
		t.Error("an explicit list must replace the defaults")
	}
}

// CONNECT is tunnelled only to the ports listed, by direction; none by
// default.
func TestConnectProxyPorts(t *testing.T) {
	s, err := Parse([]byte("version: v\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.ConnectProxy(true, 3128) || s.ConnectProxy(false, 3128) {
		t.Error("a CONNECT proxy port by default")
	}
	s, err = Parse([]byte("version: v\ninbound: {connectProxyPorts: [3128]}\noutbound: {connectProxyPorts: [8080]}\n"), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !s.ConnectProxy(true, 3128) || s.ConnectProxy(false, 3128) || !s.ConnectProxy(false, 8080) || s.ConnectProxy(true, 8080) {
		t.Error("connectProxyPorts not applied by direction")
	}
}

// FuzzParse feeds any bytes to Parse: it must not panic, an error must
// name the source, and a configuration it accepts must come back the same
// from its own dump (what /config_dump serves can be loaded again).
func FuzzParse(f *testing.F) {
	f.Add([]byte(valid))
	f.Add([]byte(`{"version": "v1", "limits": {"idleTimeout": "1m30s", "maxHeaderCount": 10}}`))
	f.Add([]byte("version: v1\ninbound: {forwardTo: loopback, opaquePorts: [3306]}\n"))
	f.Add([]byte("version: v1\nservices: [{name: a, namespace: b, addresses: [\"::1\"], ports: [{port: 1}], endpoints: [{address: \"[::1]\"}]}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data, "fuzz.yaml")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		dump, err := json.Marshal(s.Config)
		if err != nil {
			t.Fatalf("dumping an accepted configuration: %v", err)
		}
		again, err := Parse(dump, "dump.json")
		if err != nil {
			t.Fatalf("the dump of an accepted configuration is refused: %v\n%s", err, dump)
		}
		if !reflect.DeepEqual(again.Config, s.Config) {
			t.Fatalf("the dump reads back differently:\n%+v\n%+v", s.Config, again.Config)
		}
	})
}

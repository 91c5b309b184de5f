package meshapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestStreamRoundTrip(t *testing.T) {
	msgs := []ServerMessage{
		{Kind: KindMesh, Version: 1, Mesh: &MeshSettings{TrustDomain: "cluster.local", InboundMTLS: MTLSPermissive}},
		{Kind: KindService, Name: "shop/web", Version: 2, Service: &Service{Namespace: "shop", Name: "web", Addresses: []string{"10.96.0.12"}, Ports: []ServicePort{{Name: "http", Port: 80, TargetPort: 8080}}}},
		{Kind: KindEndpoints, Name: "shop/web", Version: 3, Endpoints: &Endpoints{Endpoints: []Endpoint{{Address: "10.0.0.5", Meshed: true, Identity: "spiffe://cluster.local/ns/shop/sa/web"}}}},
	}
	var stream bytes.Buffer
	for i := range msgs {
		b, err := Encode(&msgs[i])
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Count(b, []byte("\n")) != 1 || b[len(b)-1] != '\n' {
			t.Fatalf("encoded message is not one line: %q", b)
		}
		stream.Write(b)
	}
	d := NewDecoder(&stream, 0)
	for i := range msgs {
		var got ServerMessage
		if err := d.Decode(&got); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got.Kind != msgs[i].Kind || got.Version != msgs[i].Version {
			t.Fatalf("message %d: got %+v", i, got)
		}
	}
	var m ServerMessage
	if err := d.Decode(&m); err != io.EOF {
		t.Fatalf("at the end: got %v, want io.EOF", err)
	}
}

func TestDecoderRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		max      int
		want     string
	}{
		{"line past the limit", `{"kind":"` + strings.Repeat("x", 100) + `"}` + "\n", 64, "size limit"},
		{"long line past the reader's buffer", `{"kind":"` + strings.Repeat("x", 200<<10) + `"}` + "\n", 100 << 10, "size limit"},
		{"unknown field", `{"kind":"Mesh","extra":1}` + "\n", 0, "unknown field"},
		{"two documents on a line", `{"kind":"Mesh"}{"kind":"Mesh"}` + "\n", 0, "more than one"},
		{"cut short", `{"kind":"Mesh"`, 0, "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m ServerMessage
			err := NewDecoder(strings.NewReader(tc.in), tc.max).Decode(&m)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// A line longer than the reader's buffer but within the limit is read
	// whole.
	long := `{"kind":"Resolution","name":"` + strings.Repeat("a", 100<<10) + `"}` + "\n"
	var m ServerMessage
	if err := NewDecoder(strings.NewReader(long), 0).Decode(&m); err != nil || len(m.Name) != 100<<10 {
		t.Fatalf("long line: err %v, name length %d", err, len(m.Name))
	}
}

func web(version uint64) *ServerMessage {
	return &ServerMessage{Kind: KindService, Name: "shop/web", Version: version, Service: &Service{
		Namespace: "shop", Name: "web", Addresses: []string{"10.96.0.12"}, Ports: []ServicePort{{Port: 80, TargetPort: 8080}},
	}}
}

func endpoints(version uint64, addrs ...string) *ServerMessage {
	eps := make([]Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = Endpoint{Address: a}
	}
	return &ServerMessage{Kind: KindEndpoints, Name: "shop/web", Version: version, Endpoints: &Endpoints{Endpoints: eps}}
}

func addresses(st *ServiceState) []string {
	var out []string
	for _, e := range st.Endpoints {
		out = append(out, e.Address)
	}
	return out
}

func TestSetApplyIsCopyOnWrite(t *testing.T) {
	s0 := &Set{}
	s1, err := s0.Apply(web(1))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := s1.Apply(endpoints(2, "10.0.0.1", "10.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	s3, err := s2.Apply(&ServerMessage{Kind: KindEndpoints, Name: "shop/web", Version: 3, EndpointsDelta: &EndpointsDelta{
		Base: 2, Remove: []string{"10.0.0.1"}, Upsert: []Endpoint{{Address: "10.0.0.3"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(s0.Services) != 0 || s1.Services["shop/web"].Endpoints != nil {
		t.Fatal("an older set changed")
	}
	if got := strings.Join(addresses(s2.Services["shop/web"]), ","); got != "10.0.0.1,10.0.0.2" {
		t.Fatalf("set 2 holds %s", got)
	}
	st := s3.Services["shop/web"]
	if got := strings.Join(addresses(st), ","); got != "10.0.0.2,10.0.0.3" || st.EndpointsVersion != 3 || st.ServiceVersion != 1 {
		t.Fatalf("set 3 holds %s at versions %d/%d", got, st.ServiceVersion, st.EndpointsVersion)
	}

	// A delta from a version the set does not hold is refused and changes
	// nothing.
	_, err = s3.Apply(&ServerMessage{Kind: KindEndpoints, Name: "shop/web", Version: 5, EndpointsDelta: &EndpointsDelta{Base: 4}})
	if !errors.Is(err, ErrDeltaBase) {
		t.Fatalf("delta from a wrong base: got %v", err)
	}

	// Removing the service and its endpoints forgets it.
	s4, err := s3.Apply(&ServerMessage{Kind: KindService, Name: "shop/web", Version: 6, Removed: true})
	if err != nil {
		t.Fatal(err)
	}
	s5, err := s4.Apply(&ServerMessage{Kind: KindEndpoints, Name: "shop/web", Version: 7, Removed: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s5.Services["shop/web"]; ok || s4.Services["shop/web"] == nil {
		t.Fatal("removal did not forget the service, or forgot it too early")
	}
}

func TestServerMessageValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    ServerMessage
		want string
	}{
		{"two resources", ServerMessage{Kind: KindMesh, Mesh: &MeshSettings{TrustDomain: "td", InboundMTLS: MTLSStrict}, Bundle: &Bundle{}}, "exactly one"},
		{"kind mismatch", ServerMessage{Kind: KindBundle, Mesh: &MeshSettings{TrustDomain: "td", InboundMTLS: MTLSStrict}}, "does not match"},
		{"bad mTLS mode", ServerMessage{Kind: KindMesh, Mesh: &MeshSettings{TrustDomain: "td", InboundMTLS: "sometimes"}}, "inboundMTLS"},
		{"bundle without anchors", ServerMessage{Kind: KindBundle, Bundle: &Bundle{TrustDomain: "td"}}, "anchors"},
		{"bundle with garbage", ServerMessage{Kind: KindBundle, Bundle: &Bundle{TrustDomain: "td", Anchors: []string{"nope"}}}, "PEM"},
		{"service name differs", ServerMessage{Kind: KindService, Name: "a/b", Service: &Service{Namespace: "a", Name: "c", Ports: []ServicePort{{Port: 1, TargetPort: 1}}}}, "differs"},
		{"duplicate port", ServerMessage{Kind: KindService, Name: "a/b", Service: &Service{Namespace: "a", Name: "b", Ports: []ServicePort{{Port: 1, TargetPort: 1}, {Port: 1, TargetPort: 2}}}}, "twice"},
		{"named target without name", ServerMessage{Kind: KindService, Name: "a/b", Service: &Service{Namespace: "a", Name: "b", Ports: []ServicePort{{Port: 1}}}}, "needs a name"},
		{"bad address", ServerMessage{Kind: KindEndpoints, Name: "a/b", Endpoints: &Endpoints{Endpoints: []Endpoint{{Address: "host"}}}}, "not an IP"},
		{"meshed without identity", ServerMessage{Kind: KindEndpoints, Name: "a/b", Endpoints: &Endpoints{Endpoints: []Endpoint{{Address: "10.0.0.1", Meshed: true}}}}, "identity"},
		{"duplicate endpoint", ServerMessage{Kind: KindEndpoints, Name: "a/b", Endpoints: &Endpoints{Endpoints: []Endpoint{{Address: "10.0.0.1"}, {Address: "10.0.0.1"}}}}, "twice"},
		{"removed mesh", ServerMessage{Kind: KindMesh, Removed: true}, "only services"},
		{"bad resolution", ServerMessage{Kind: KindResolution, Name: "x", Resolution: &Resolution{Address: "10.0.0.1"}}, "address and port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.m.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// FuzzDecodeMatchesUnmarshal holds the line framing to encoding/json: what
// the decoder accepts from a one-line stream is what json.Unmarshal reads
// from that line, and nothing it reads panics or passes the limit.
func FuzzDecodeMatchesUnmarshal(f *testing.F) {
	f.Add([]byte(`{"kind":"Mesh","name":"","version":1,"mesh":{"trustDomain":"td","inboundMTLS":"strict"}}` + "\n"))
	f.Add([]byte(`{"kind":"Endpoints","name":"a/b","version":2,"endpointsDelta":{"base":1,"remove":["10.0.0.1"]}}` + "\n"))
	f.Add([]byte("{}\n{}\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var got ServerMessage
		err := NewDecoder(bytes.NewReader(in), 1<<10).Decode(&got)
		if err != nil {
			return
		}
		line, _, _ := bytes.Cut(in, []byte("\n"))
		if len(line) > 1<<10 {
			t.Fatalf("accepted a line of %d bytes past the limit", len(line))
		}
		var want ServerMessage
		if err := json.Unmarshal(line, &want); err != nil {
			t.Fatalf("decoder accepted %q, json.Unmarshal refused it: %v", line, err)
		}
		a, _ := json.Marshal(&got)
		b, _ := json.Marshal(&want)
		if !bytes.Equal(a, b) {
			t.Fatalf("decoder read %s, json.Unmarshal %s", a, b)
		}
	})
}

package controllertest

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
)

// Publish stores a resource version and sends it to the streams that hold
// it (every stream for the mesh settings and the bundle).
func (c *Controller) Publish(m meshapi.ServerMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resources[key{m.Kind, m.Name}] = m
	c.sendLocked(m)
	if m.Kind == meshapi.KindResolution && m.Resolution != nil && m.Resolution.Service != "" {
		for st := range c.streams {
			if st.hello && st.addrs[m.Name] {
				c.subscribeLocked(st, m.Resolution.Service)
			}
		}
	}
}

// Send sends a message without storing it: a delta, or a version the
// proxy should refuse.
func (c *Controller) Send(m meshapi.ServerMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sendLocked(m)
}

func (c *Controller) sendLocked(m meshapi.ServerMessage) {
	line, err := meshapi.Encode(m)
	if err != nil {
		c.t.Error(err)
		return
	}
	for st := range c.streams {
		if !st.hello {
			continue
		}
		switch m.Kind {
		case meshapi.KindService, meshapi.KindEndpoints:
			if !st.services[m.Name] {
				continue
			}
		case meshapi.KindResolution:
			if !st.addrs[m.Name] {
				continue
			}
		}
		st.out <- line
	}
}

// HoldResolutions makes answers to subscriptions by address wait until it
// is called with false.
func (c *Controller) HoldResolutions(hold bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold = hold
	if !hold {
		for _, h := range c.held {
			if c.streams[h.st] {
				c.resolveLocked(h.st, h.addr)
			}
		}
		c.held = nil
	}
}

// Records returns the messages received so far.
func (c *Controller) Records() []Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Record(nil), c.records...)
}

// WaitFor waits until cond holds for the records received, failing the
// test after 10 s.
func (c *Controller) WaitFor(t testing.TB, what string, cond func([]Record) bool) []Record {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		recs := append([]Record(nil), c.records...)
		ch := c.changed
		c.mu.Unlock()
		if cond(recs) {
			return recs
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("controllertest: timed out waiting for %s; received %d messages", what, len(recs))
		}
	}
}

func (c *Controller) discovery(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, meshapi.ReasonBadRequest, "POST only")
		return
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || len(r.TLS.PeerCertificates[0].URIs) != 1 {
		writeError(w, http.StatusUnauthorized, meshapi.ReasonUnauthenticated, "a mesh certificate is required")
		return
	}
	peer := r.TLS.PeerCertificates[0].URIs[0].String()
	c.mu.Lock()
	stop := c.stop
	c.nstreams++
	st := &stream{n: c.nstreams, out: make(chan []byte, 1024), services: map[string]bool{}, addrs: map[string]bool{}}
	c.streams[st] = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.streams, st)
		c.mu.Unlock()
	}()

	w.Header().Set("Content-Type", meshapi.ContentType)
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		defer cancel()
		dec := meshapi.NewDecoder(r.Body, 0)
		for {
			var m meshapi.ClientMessage
			if err := dec.Decode(&m); err != nil {
				return
			}
			if !c.receive(st, peer, m) {
				return
			}
		}
	}()
	for {
		select {
		case line := <-st.out:
			if _, err := w.Write(line); err != nil {
				return
			}
			// Send what is queued with it in one flush.
			for more := true; more; {
				select {
				case line := <-st.out:
					if _, err := w.Write(line); err != nil {
						return
					}
				default:
					more = false
				}
			}
			if err := rc.Flush(); err != nil {
				return
			}
		case <-ctx.Done():
			return
		case <-stop:
			return
		}
	}
}

// receive handles one client message; false ends the stream.
func (c *Controller) receive(st *stream, peer string, m meshapi.ClientMessage) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.records = append(c.records, Record{Stream: st.n, Peer: peer, Msg: m})
	close(c.changed)
	c.changed = make(chan struct{})
	switch {
	case m.Hello != nil:
		if st.hello || m.Hello.APIVersion != meshapi.APIVersion {
			return false
		}
		st.hello = true
		c.sendStoredLocked(st, key{meshapi.KindMesh, ""})
		c.sendStoredLocked(st, key{meshapi.KindBundle, ""})
	case !st.hello:
		return false // the contract opens with a hello
	case m.Subscribe != nil:
		for _, s := range m.Subscribe.Services {
			c.subscribeLocked(st, s)
		}
		for _, a := range m.Subscribe.Addresses {
			st.addrs[a] = true
			if c.hold {
				c.held = append(c.held, heldResolution{st, a})
				continue
			}
			c.resolveLocked(st, a)
		}
	case m.Unsubscribe != nil:
		for _, s := range m.Unsubscribe.Services {
			delete(st.services, s)
		}
		for _, a := range m.Unsubscribe.Addresses {
			delete(st.addrs, a)
		}
	}
	return true
}

func (c *Controller) subscribeLocked(st *stream, service string) {
	if st.services[service] {
		return
	}
	st.services[service] = true
	c.sendStoredLocked(st, key{meshapi.KindService, service})
	c.sendStoredLocked(st, key{meshapi.KindEndpoints, service})
}

// resolveLocked answers a subscription by address with the stored
// resolution, or a negative one at version 1 when the test stored none.
func (c *Controller) resolveLocked(st *stream, addr string) {
	k := key{meshapi.KindResolution, addr}
	m, ok := c.resources[k]
	if !ok {
		m = meshapi.ServerMessage{Kind: meshapi.KindResolution, Name: addr, Version: 1, Resolution: &meshapi.Resolution{Address: addr}}
		c.resources[k] = m
	}
	c.sendStoredLocked(st, k)
	if m.Resolution != nil && m.Resolution.Service != "" {
		c.subscribeLocked(st, m.Resolution.Service)
	}
}

func (c *Controller) sendStoredLocked(st *stream, k key) {
	m, ok := c.resources[k]
	if !ok {
		return
	}
	line, err := meshapi.Encode(m)
	if err != nil {
		c.t.Error(err)
		return
	}
	st.out <- line
}

// Acks returns the ACKs and NACKs received for a kind and name.
func Acks(recs []Record, kind meshapi.Kind, name string) []meshapi.Ack {
	var out []meshapi.Ack
	for _, r := range recs {
		if a := r.Msg.Ack; a != nil && a.Kind == kind && a.Name == name {
			out = append(out, *a)
		}
	}
	return out
}

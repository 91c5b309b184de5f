package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/pki"
)

// ReasonTooManyStreams is the meshapi.Error reason of a stream refused
// because a bound on streams was reached (status 429, with Retry-After).
const ReasonTooManyStreams = "too-many-streams"

// MaxClientMessageBytes bounds one line a proxy sends: subscriptions name
// services and addresses, never resources.
const MaxClientMessageBytes = 1 << 20

// Handler returns the http.Handler of meshapi.PathDiscovery. The server
// that mounts it must require and verify client certificates against the
// trust anchors (tls.VerifyClientCertIfGiven or RequireAndVerifyClientCert)
// and speak HTTP/2, whose streams are full duplex. A stream ends when the
// proxy closes it, when the request's context ends, or when Run returns.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveDiscovery) }

// isDeltaBaseError says whether a NACK's text is the proxy's
// meshapi.ErrDeltaBase: the proxy does not hold the delta's base.
func isDeltaBaseError(msg string) bool { return strings.Contains(msg, meshapi.ErrDeltaBase.Error()) }

// PeerIdentity returns the SPIFFE id of a verified client certificate: the
// single URI SAN of the leaf of the first verified chain.
func PeerIdentity(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return "", errors.New("no verified client certificate")
	}
	return pki.SPIFFEIDOf(r.TLS.VerifiedChains[0][0])
}

func writeError(w http.ResponseWriter, status int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(meshapi.Error{APIVersion: meshapi.APIVersion, Status: status, Reason: reason, Error: msg})
}

func (s *Server) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, meshapi.ReasonBadRequest, "the discovery stream is POST only")
		return
	}
	id, err := PeerIdentity(r)
	if err != nil {
		writeError(w, http.StatusUnauthorized, meshapi.ReasonUnauthenticated, err.Error())
		return
	}
	log := s.log.With("proxy", id, "remote", r.RemoteAddr)
	release, why, ok := s.admitStream(id)
	if !ok {
		s.metrics.streamsRefused[why].Add(1)
		log.Debug("refusing a discovery stream", "reason", streamReasons[why])
		msg := fmt.Sprintf("this identity has %d discovery streams open, as many as one identity may", s.opts.MaxStreamsPerIdentity)
		if why == streamTotal {
			msg = fmt.Sprintf("the controller serves %d discovery streams, as many as it may; try another replica or later", s.opts.MaxStreams)
		}
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusTooManyRequests, ReasonTooManyStreams, msg)
		return
	}
	defer release()
	// The slot is held from here: a stream that never says hello must
	// not keep it.
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(s.opts.HelloTimeout))
	dec := meshapi.NewDecoder(r.Body, MaxClientMessageBytes)
	var hello meshapi.ClientMessage
	if err := dec.Decode(&hello); err != nil || hello.Hello == nil {
		writeError(w, http.StatusBadRequest, meshapi.ReasonBadRequest, "the first message must be a hello")
		return
	}
	rc.SetReadDeadline(time.Time{})
	if hello.Hello.APIVersion != meshapi.APIVersion {
		writeError(w, http.StatusBadRequest, meshapi.ReasonBadRequest, fmt.Sprintf("apiVersion %q: this controller speaks %q", hello.Hello.APIVersion, meshapi.APIVersion))
		return
	}
	if hello.Hello.Pod != "" {
		log = log.With("pod", hello.Hello.Namespace+"/"+hello.Hello.Pod)
	}
	rc.EnableFullDuplex() // HTTP/1.1 only; HTTP/2 always is
	w.Header().Set("Content-Type", meshapi.ContentType)
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}

	sub := newSubscriber(id, log)
	s.connect(sub)
	defer s.disconnect(sub)
	log.Info("proxy connected", "proxyVersion", hello.Hello.ProxyVersion)

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	readDone := make(chan error, 1)
	go func() { readDone <- s.read(ctx, sub, dec) }()

	for {
		select {
		case <-ctx.Done():
			return
		case <-s.done:
			return
		case err := <-readDone:
			if err != nil && !errors.Is(err, io.EOF) && ctx.Err() == nil {
				log.Warn("discovery stream ended", "error", err)
			} else {
				log.Info("proxy disconnected")
			}
			return
		case <-sub.wake:
		}
		// A proxy that stops reading blocks the write once its window is
		// full; the deadline ends the stream instead of holding it. It
		// bounds this write only (cleared below), so it is set before
		// every write: a deadline left over from an earlier write would
		// have passed, or been cleared.
		rc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
		if err := s.write(w, sub); err != nil {
			log.Info("writing to the proxy", "error", err)
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		// HTTP/2 resets the stream when a deadline passes even with no
		// write pending: the deadline bounds this write only.
		rc.SetWriteDeadline(time.Time{})
	}
}

// write sends the newest version of every resource due on sub.
func (s *Server) write(w io.Writer, sub *subscriber) error {
	keys, due := sub.take()
	for _, k := range keys {
		r := s.lookup(k)
		if r == nil {
			continue
		}
		b, isDelta := sub.choose(k, r, due[k])
		if b == nil {
			continue
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		sub.sent(k, r, isDelta)
		s.metrics.sent(k.kind, len(b), isDelta)
	}
	return nil
}

// read handles what the proxy sends until the stream ends.
func (s *Server) read(ctx context.Context, sub *subscriber, dec *meshapi.Decoder) error {
	for {
		var m meshapi.ClientMessage
		if err := dec.Decode(&m); err != nil {
			return err
		}
		switch {
		case m.Subscribe != nil:
			s.subscribe(sub, m.Subscribe)
		case m.Unsubscribe != nil:
			s.unsubscribe(sub, m.Unsubscribe)
		case m.Ack != nil:
			res := sub.ack(m.Ack, s.now())
			switch {
			case !res.known:
			case m.Ack.Error != "":
				s.metrics.nacks[kindIndex(m.Ack.Kind)].Add(1)
				sub.log.Warn("proxy refused a resource", "kind", m.Ack.Kind, "name", m.Ack.Name, "version", m.Ack.Version, "error", m.Ack.Error, "resendInFull", res.resend)
				if res.resend {
					sub.mark(resKey{m.Ack.Kind, m.Ack.Name}, true)
				}
			case res.latency > 0:
				s.metrics.observeLatency(res.latency)
			}
		case m.Hello != nil:
			return errors.New("a second hello")
		default:
			return errors.New("an empty message")
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

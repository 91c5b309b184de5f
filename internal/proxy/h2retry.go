package proxy

import (
	"context"
	"net/http"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/telemetry"
	"github.com/meshctl/mesh/internal/proxy/upstream"
)

// h2Retry is the transport of one HTTP/2 stream: it sends the stream to
// another endpoint when the first did not process it, as the HTTP/1 path
// does (see unprocessedHeader). Only a stream without a body is sent
// again: a round trip closes the body it was given, so no other can be
// replayed.
type h2Retry struct {
	s *session
	// rt is the stream's route; a retry replaces it, releasing the old.
	rt  route
	rec *telemetry.Record
}

func (h *h2Retry) RoundTrip(req *http.Request) (*http.Response, error) {
	for retries := 0; ; retries++ {
		resp, err := h.s.p.h2Transport.RoundTrip(req)
		if retries == maxUnprocessedRetries || !h.unprocessed(req, resp, err) {
			return resp, err
		}
		other, rerr := h.s.routeAround(meshapi.ProtocolHTTP2, h.rt.ep)
		if rerr != nil {
			return resp, err
		}
		h.s.p.log.Debug("retrying an HTTP/2 stream its endpoint did not process", "upstream", h.rt.target.Addr, "next", other.target.Addr, "error", err)
		if resp != nil {
			resp.Body.Close()
		}
		h.rec.Series.Retry()
		h.rt.done()
		h.rt = other
		h.rec.Upstream = other.target.Addr
		req = req.Clone(context.WithValue(req.Context(), targetKey{}, other.target))
		req.URL.Host = other.target.Addr
	}
}

func (h *h2Retry) unprocessed(req *http.Request, resp *http.Response, err error) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	if err != nil {
		return upstream.IsDialError(err) && req.Context().Err() == nil
	}
	return h.rt.target.Meshed && resp.Header.Get(unprocessedHeader) != ""
}

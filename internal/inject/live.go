package inject

import (
	"encoding/json"
	"reflect"

	"gopkg.in/yaml.v3"

	"github.com/meshctl/mesh/internal/wellknown"
)

// An object read back from the API server (`kubectl get -o yaml`) carries
// its injection in another form than injection wrote it: keys sorted,
// defaults filled in (imagePullPolicy, probe timeouts, a volume's
// defaultMode, ...), items appended (the ServiceAccount token's mount). Its
// text can no longer be what injecting it again would write, so comparing
// bytes would call it changed and rewrite it. sameInjection compares
// meanings instead, and injection leaves such a workload's text alone.

// sameInjection reports whether w carries the very injection that injecting
// it now would add: the same status and bootstrap annotations, and the
// added containers and volume first in their lists, each holding at least
// every field injection writes, with the same values.
func sameInjection(w *workload, s *Settings, c *cache) bool {
	if w.skip != "" {
		return false
	}
	t, reason, err := readTemplate(w)
	if err != nil || reason != "" || skipReason(w, t, s) != "" {
		return false
	}
	ann := t.annotations()
	v, ok := ann[annotationInjected]
	if !ok {
		return false
	}
	old, err := parseStatus(v)
	if err != nil {
		return false
	}
	p, _, err := s.proxyFor(w, t)
	if err != nil {
		return false
	}
	st := newStatus(s.Version, p.native)
	st.Created = old.Created
	if st.encode() != v || ann[wellknown.AnnotationProxyConfig] != p.bootstrapConfig() {
		return false
	}
	inits, proxy, vols := p.added(c, stringKey(p))
	if !p.native && !leadingItems(t.containers, proxy) {
		return false
	}
	return leadingItems(t.initCtrs, inits) && leadingItems(t.volume, vols)
}

// leadingItems reports whether sequence seq starts with items, each
// holding at least what injection writes.
func leadingItems(seq *yaml.Node, items list) bool {
	if seq == nil || len(seq.Content) < len(items) {
		return false
	}
	for i, it := range items {
		var got any
		if err := seq.Content[i].Decode(&got); err != nil {
			return false
		}
		if !covers(normalize(it), normalize(got)) {
			return false
		}
	}
	return true
}

// normalize turns a value of the emitter's model or of yaml.v3's decoding
// into what encoding/json decodes from its JSON, so that the two compare.
func normalize(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var out any
	if json.Unmarshal(b, &out) != nil {
		return nil
	}
	return out
}

// covers reports whether got holds everything of want: objects may have
// more members, lists more items at their end (the API server appends the
// ServiceAccount token's volumeMount), scalars must be equal.
func covers(want, got any) bool {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return false
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok || !covers(wv, gv) {
				return false
			}
		}
		return true
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) < len(w) {
			return false
		}
		for i := range w {
			if !covers(w[i], g[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(want, got)
}

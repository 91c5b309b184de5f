// Package inject adds the mesh's proxy to the pod templates of Kubernetes
// manifests, and removes it again, without reformatting anything else.
//
// The transform is pure: bytes and Settings in, bytes and a report out. It
// backs `meshctl inject` and `meshctl uninject` and the controller's
// admission webhook.
//
// Documents are parsed with gopkg.in/yaml.v3 only to locate the pod
// template's parts; the additions are spliced into the original text, in the
// document's own style (block or flow, indentation, line endings). Outside
// the added lines the output is the input byte for byte, and Uninject of
// Inject's output gives back the input exactly. What was added is recorded in
// the meshctl.dev/injected annotation (see Status); re-injection removes the
// old injection first, so injecting twice changes nothing and injecting the
// output of another version replaces its injection.
//
// Insertions always go at the start of a mapping or list: a collection's
// start is the one place whose position the parser reports exactly, and an
// item inserted there is followed by the original first item, so uninject can
// find where it ends. The proxy being first among the containers is also what
// makes the application start after it.
package inject

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/meshctl/mesh/internal/wellknown"
)

// Outcome is what happened to one workload.
type Outcome string

const (
	// Injected: the proxy was added (or an older injection replaced).
	Injected Outcome = "injected"
	// Unchanged: the workload already carried this exact injection.
	Unchanged Outcome = "unchanged"
	// Skipped: the workload must not or cannot be injected; Reason says
	// why. Its text is left as it was.
	Skipped Outcome = "skipped"
	// Uninjected: Uninject removed the proxy.
	Uninjected Outcome = "uninjected"
	// NotInjected: Uninject found no injection to remove.
	NotInjected Outcome = "not-injected"
)

// Report is the outcome for one workload of the stream.
type Report struct {
	// Document is the 1-based index of the document in the stream.
	Document int `json:"document"`
	// Item is the 0-based index of the workload in a List, -1 outside one.
	Item int `json:"item"`
	// Line is the line of the stream where the workload starts.
	Line      int     `json:"line"`
	Kind      string  `json:"kind"`
	Name      string  `json:"name"`
	Namespace string  `json:"namespace,omitempty"`
	Outcome   Outcome `json:"outcome"`
	// Reason says why a workload was skipped.
	Reason string `json:"reason,omitempty"`
	// PreviousVersion is the version of the injection that Inject replaced
	// or that Uninject removed.
	PreviousVersion string `json:"previousVersion,omitempty"`
	// Warning says when an injection may not suit the workload (a Job's
	// classic sidecar that keeps it from completing).
	Warning string `json:"warning,omitempty"`
}

// Error locates a failure in the stream. Callers add the file name.
type Error struct {
	// Document is the 1-based index of the document; Line is the line of
	// the stream (0 when unknown).
	Document int
	Line     int
	Err      error
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("document %d (line %d): %v", e.Document, e.Line, e.Err)
	}
	return fmt.Sprintf("document %d: %v", e.Document, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Inject adds the proxy to every workload of a YAML or JSON stream (one
// document or several separated by ---, Lists included) and returns the new
// stream and one report per workload. Documents that are not workloads, and
// workloads that are skipped, come out byte for byte. On error the output is
// nil: a stream is transformed whole or not at all.
func Inject(in []byte, s Settings) ([]byte, []Report, error) {
	docs, err := splitDocuments(in)
	if err != nil {
		return nil, nil, err
	}
	s.Namespaces = withStreamNamespaces(docs, s.Namespaces)
	out := make([]byte, 0, len(in)+len(in)/4)
	var reports []Report
	c := &cache{texts: map[string]string{}, values: map[string]any{}}
	consumed := 0
	for _, d := range docs {
		b, r, err := injectDocument(d, &s, c)
		if isFormatting(err) {
			b, r, err = inPlainLayout(d, err, func(n document) ([]byte, []Report, error) { return injectDocument(n, &s, c) })
		}
		if err != nil {
			return nil, nil, err
		}
		consumed += len(d.b)
		out = appendProjected(out, b, consumed, len(in))
		reports = append(reports, r...)
	}
	return out, reports, nil
}

// appendProjected appends b to out; when out must grow, it grows to the size
// the whole output will have if the rest of the input grows as the part
// consumed so far did. An injected workload is about three times its input,
// so doubling from the input's size would copy the output several times.
func appendProjected(out, b []byte, consumed, total int) []byte {
	need := len(out) + len(b)
	if need > cap(out) && consumed > 0 {
		projected := int(float64(need) * float64(total) / float64(consumed) * 1.05)
		grown := make([]byte, len(out), max(projected, need))
		copy(grown, out)
		out = grown
	}
	return append(out, b...)
}

// Uninject removes what Inject added from every workload of a stream.
func Uninject(in []byte) ([]byte, []Report, error) {
	docs, err := splitDocuments(in)
	if err != nil {
		return nil, nil, err
	}
	out := make([]byte, 0, len(in))
	var reports []Report
	for _, d := range docs {
		root, err := d.parse()
		if err != nil {
			return nil, nil, err
		}
		b, r, err := uninjectDocument(d, root, nil)
		if isFormatting(err) {
			b, r, err = inPlainLayout(d, err, func(n document) ([]byte, []Report, error) {
				root, err := n.parseYAML()
				if err != nil {
					return nil, nil, err
				}
				return uninjectDocument(n, root, nil)
			})
		}
		if err != nil {
			return nil, nil, err
		}
		out = append(out, b...)
		reports = append(reports, r...)
	}
	return out, reports, nil
}

// document is one document of a stream: its text from the start of its
// "---" line (if any) to the start of the next one.
type document struct {
	*source
	index int
}

func (d document) errorf(line int, format string, args ...any) error {
	return &Error{Document: d.index, Line: line, Err: fmt.Errorf(format, args...)}
}

func (d document) wrap(err error) error {
	var f *errFormatting
	line := 0
	if errors.As(err, &f) {
		line = f.line
	}
	return &Error{Document: d.index, Line: line, Err: err}
}

// parse returns the document's root node, nil for an empty document.
func (d document) parse() (*yaml.Node, error) {
	root, _, err := d.parseFast()
	return root, err
}

// parseFast is parse, also saying whether the fast parser read the document
// (see fastParse).
func (d document) parseFast() (*yaml.Node, bool, error) {
	if root, ok := fastParse(d.b); ok {
		return root, true, nil
	}
	root, err := d.parseYAML()
	return root, false, err
}

func (d document) parseYAML() (*yaml.Node, error) {
	var n yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(d.b))
	if err := dec.Decode(&n); err != nil {
		if errors.Is(err, errEOF) {
			return nil, nil
		}
		return nil, d.errorf(0, "parsing: %w", shiftLines(err, d.firstLine-1))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, d.errorf(d.firstLine+extra.Line-1, "parsing: a second document without a --- separator")
	} else if !errors.Is(err, errEOF) {
		return nil, d.errorf(0, "parsing: %w", shiftLines(err, d.firstLine-1))
	}
	if len(n.Content) == 0 {
		return nil, nil
	}
	return n.Content[0], nil
}

func (d document) lineOf(n *yaml.Node) int { return d.firstLine + n.Line - 1 }

// NamespaceLabels returns the meshctl.dev/inject labels of the Namespace
// documents of a stream (name -> value), for a caller that injects several
// streams with the namespaces of all of them (Settings.Namespaces).
func NamespaceLabels(in []byte) (map[string]string, error) {
	docs, err := splitDocuments(in)
	if err != nil {
		return nil, err
	}
	return withStreamNamespaces(docs, nil), nil
}

// withStreamNamespaces adds the inject labels of the stream's Namespace
// documents to known. Only documents that mention a Namespace are parsed.
func withStreamNamespaces(docs []document, known map[string]string) map[string]string {
	out := make(map[string]string, len(known))
	for k, v := range known {
		out[k] = v
	}
	for _, d := range docs {
		if !bytes.Contains(d.b, []byte("Namespace")) {
			continue
		}
		root, err := d.parse()
		if err != nil || root == nil {
			continue
		}
		nodes := []*yaml.Node{root}
		if _, items := mapGet(root, "items"); items != nil && items.Kind == yaml.SequenceNode {
			nodes = items.Content
		}
		for _, n := range nodes {
			if scalar(n, "kind") != "Namespace" {
				continue
			}
			_, meta := mapGet(n, "metadata")
			_, labels := mapGet(meta, "labels")
			if v := scalar(labels, wellknown.LabelInject); v != "" {
				out[scalar(meta, "name")] = v
			}
		}
	}
	return out
}

func (w *workload) report(d document, line int) Report {
	return Report{Document: d.index, Item: w.item, Line: line, Kind: w.kind, Name: w.name, Namespace: w.namespace}
}

// injectDocument injects every workload of one document.
func injectDocument(d document, s *Settings, c *cache) ([]byte, []Report, error) {
	root, common, err := d.parseFast()
	if err != nil {
		return nil, nil, err
	}
	ws, err := findWorkloads(root)
	if err != nil {
		return nil, nil, d.errorf(d.lineOf(root), "%w", err)
	}
	if len(ws) == 0 {
		return d.b, nil, nil
	}
	lines := make([]int, len(ws))
	for i, w := range ws {
		lines[i] = d.lineOf(w.node)
	}

	// An injected document is first brought back to what it was before, so
	// that injecting again yields the same bytes and an older injection is
	// replaced whole.
	//
	// A workload that already carries the very injection that would be
	// added, as an API server returns it, is kept as it is (sameInjection).
	base := d
	replaced := map[int]string{}
	var keep map[int]bool
	if hasInjection(ws) {
		keep = unchangedWorkloads(ws, s, c)
		b, reps, err := uninjectDocument(d, root, keep)
		if err != nil {
			return nil, nil, err
		}
		for i, r := range reps {
			replaced[i] = r.PreviousVersion
		}
		base = document{source: newSource(b, d.firstLine), index: d.index}
		if root, common, err = base.parseFast(); err != nil {
			return nil, nil, err
		}
		if ws, err = findWorkloads(root); err != nil || len(ws) != len(lines) {
			return nil, nil, d.errorf(d.lineOf(root), "re-reading the document after removing the previous injection: %v", err)
		}
	}

	// Formatting outside the fast parser's subset (common is false) is
	// where the splicer meets the unusual: there, the output is checked by
	// undoing the injection, which must give back the input exactly.
	sp := &splicer{src: base.source, style: detectStyle(base.source, ws), cache: c}
	reports := make([]Report, len(ws))
	for i, w := range ws {
		rep := w.report(d, lines[i])
		if keep[i] {
			rep.Outcome = Unchanged
			reports[i] = rep
			continue
		}
		rep.PreviousVersion = replaced[i]
		reason, warning, err := injectWorkload(sp, w, s)
		if err != nil {
			var f *errFormatting
			if errors.As(err, &f) {
				return nil, nil, base.wrap(fmt.Errorf("%s %q: %w", w.kind, w.name, err))
			}
			return nil, nil, d.errorf(lines[i], "%s %q: %w", w.kind, w.name, err)
		}
		if reason != "" {
			rep.Outcome, rep.Reason = Skipped, reason
		} else {
			rep.Outcome, rep.Warning = Injected, warning
		}
		reports[i] = rep
	}
	out, err := sp.apply()
	if err != nil {
		return nil, nil, base.wrap(err)
	}

	if !common {
		if err := checkReversible(d, out, base, len(keep) > 0); err != nil {
			return nil, nil, err
		}
	}
	if bytes.Equal(out, d.b) {
		for i := range reports {
			if reports[i].Outcome == Injected {
				reports[i].Outcome, reports[i].PreviousVersion = Unchanged, ""
			}
		}
	}
	return out, reports, nil
}

// inPlainLayout applies edit to d rewritten in the plainest layout (see
// normalized), after the splicer refused d's own with err; reports keep the
// lines of d.
func inPlainLayout(d document, err error, edit func(document) ([]byte, []Report, error)) ([]byte, []Report, error) {
	n, nerr := d.normalized()
	if nerr != nil {
		return nil, nil, err
	}
	b, reports, err := edit(n)
	if err != nil {
		return nil, nil, err
	}
	root, perr := d.parseYAML()
	if perr != nil {
		return nil, nil, perr
	}
	ws, _ := findWorkloads(root)
	for i := range reports {
		if i < len(ws) {
			reports[i].Line = d.lineOf(ws[i].node)
		}
	}
	return b, reports, nil
}

// unchangedWorkloads are the indexes of the workloads that carry the very
// injection that injecting them now would add.
func unchangedWorkloads(ws []*workload, s *Settings, c *cache) map[int]bool {
	keep := map[int]bool{}
	for i, w := range ws {
		if sameInjection(w, s, c) {
			keep[i] = true
		}
	}
	return keep
}

// checkReversible parses an injected document and removes its injection
// again, which must give back base, or base without its injections when
// some were kept (undoing out undoes those too).
func checkReversible(d document, out []byte, base document, kept bool) error {
	want := base.b
	if kept {
		root, err := base.parseYAML()
		if err == nil {
			want, _, err = uninjectDocument(base, root, nil)
		}
		if err != nil {
			return err
		}
	}
	return checkUndoes(d, out, want)
}

// checkUndoes parses an injected document and removes its injection again,
// which must give back base.
func checkUndoes(d document, out, base []byte) error {
	o := document{source: newSource(out, d.firstLine), index: d.index}
	root, err := o.parseYAML()
	if err == nil {
		var back []byte
		if back, _, err = uninjectDocument(o, root, nil); err == nil && !bytes.Equal(back, base) {
			err = errors.New("removing it does not give back the input")
		}
	}
	if err != nil {
		return d.wrap(&errFormatting{line: d.firstLine, what: fmt.Sprintf("the document (%v)", err)})
	}
	return nil
}

func hasInjection(ws []*workload) bool {
	for _, w := range ws {
		if w.skip != "" {
			continue
		}
		t, _, err := readTemplate(w)
		if err != nil || t == nil {
			continue
		}
		if _, ok := t.annotations()[annotationInjected]; ok {
			return true
		}
	}
	return false
}

// injectWorkload adds the edits that inject w, or returns why it is
// skipped; the warning is for an injection that may not suit the workload.
func injectWorkload(sp *splicer, w *workload, s *Settings) (reason, warning string, err error) {
	if w.skip != "" {
		return w.skip, "", nil
	}
	t, reason, err := readTemplate(w)
	if err != nil || reason != "" {
		return reason, "", err
	}
	if reason := skipReason(w, t, s); reason != "" {
		return reason, "", nil
	}
	ann := t.annotations()
	p, warning, err := s.proxyFor(w, t)
	if err != nil {
		return "", "", err
	}
	if err := t.checkNoLeftovers(ann); err != nil {
		return "", "", err
	}

	pkey := stringKey(p)
	inits, proxy, vols := p.added(sp.cache, pkey)
	st := newStatus(s.Version, p.native)
	var newSpecKeys object
	if t.initCtrs == nil {
		st.Created = append(st.Created, "spec.initContainers")
		newSpecKeys = append(newSpecKeys, field{"initContainers", inits})
	}
	if t.volume == nil {
		st.Created = append(st.Created, "spec.volumes")
		newSpecKeys = append(newSpecKeys, field{"volumes", vols})
	}
	switch {
	case t.meta == nil:
		st.Created = append([]string{"metadata"}, st.Created...)
	case t.ann == nil:
		st.Created = append([]string{"metadata.annotations"}, st.Created...)
	}
	// The rendered text depends only on the proxy's configuration and on
	// what exists already, which the status records.
	status := st.encode()
	key := pkey + "|" + status
	bootstrap := sp.memo("config|"+pkey, func() any { return p.bootstrapConfig() }).(string)
	statusEntry := object{
		{annotationInjected, singleQuoted(status)},
		{wellknown.AnnotationProxyConfig, singleQuoted(bootstrap)},
	}
	switch {
	case t.meta == nil:
		err = sp.insertEntries(t.node, object{{"metadata", object{{"annotations", statusEntry}}}}, "the pod template", "meta|"+key)
	case t.ann == nil:
		err = sp.insertEntries(t.meta, object{{"annotations", statusEntry}}, "the pod template's metadata", "ann|"+key)
	default:
		err = sp.insertEntries(t.ann, statusEntry, "the pod template's annotations", "status|"+key)
	}
	if err != nil {
		return "", "", err
	}
	if len(newSpecKeys) > 0 {
		if err := sp.insertEntries(t.spec, newSpecKeys, "the pod spec", "spec|"+key); err != nil {
			return "", "", err
		}
	}
	if t.initCtrs != nil {
		if err := sp.insertItems(t.initCtrs, inits, "the init containers", "inits|"+key); err != nil {
			return "", "", err
		}
	}
	if !p.native {
		if err := sp.insertItems(t.containers, proxy, "the containers", "proxy|"+key); err != nil {
			return "", "", err
		}
	}
	if t.volume != nil {
		if err := sp.insertItems(t.volume, vols, "the volumes", "volume|"+key); err != nil {
			return "", "", err
		}
	}
	return "", warning, nil
}

// stringKey names a proxy configuration in the caches of a stream.
func stringKey(p proxyConfig) string { return fmt.Sprintf("%+v", p) }

// proxyFor is the proxy of one workload: the settings with its template's
// annotations and grace period.
// The warning says when the proxy may not suit the workload (see
// nativeFor).
func (s *Settings) proxyFor(w *workload, t *podTemplate) (proxyConfig, string, error) {
	p, err := s.configure(t.annotations())
	if err != nil {
		return p, "", err
	}
	p.terminationGrace = t.gracePeriod()
	var warning string
	p.native, warning = s.nativeFor(w)
	return p, warning, nil
}

// added is what injection adds to the lists of a pod template. It depends
// only on the proxy's configuration (pkey): built once per configuration
// and stream.
func (p proxyConfig) added(c *cache, pkey string) (inits, proxy, vols list) {
	a := c.memo("added|"+pkey, func() any {
		inits := list{p.initContainer()}
		if p.native {
			inits = append(inits, p.proxyContainer())
		}
		return [3]list{inits, {p.proxyContainer()}, {volume()}}
	}).([3]list)
	return a[0], a[1], a[2]
}

// newStatus is the status of an injection, but for what it created.
func newStatus(version string, native bool) Status {
	st := Status{Version: version, Volumes: []string{VolumeName}, Annotations: []string{wellknown.AnnotationProxyConfig}}
	st.InitContainers = []string{wellknown.InitContainerName}
	if native {
		st.InitContainers = append(st.InitContainers, wellknown.ProxyContainerName)
	} else {
		st.Containers = []string{wellknown.ProxyContainerName}
	}
	return st
}

// gracePeriod is the template's terminationGracePeriodSeconds, -1 when
// unset.
func (t *podTemplate) gracePeriod() int64 {
	if _, v := mapGet(t.spec, "terminationGracePeriodSeconds"); v != nil && v.Kind == yaml.ScalarNode {
		var g int64
		if _, err := fmt.Sscan(v.Value, &g); err == nil {
			return g
		}
	}
	return -1
}

// checkNoLeftovers refuses a template that carries something of an
// injection without its status annotation: injecting would duplicate it, and
// nothing says what is safe to remove.
func (t *podTemplate) checkNoLeftovers(ann map[string]string) error {
	for _, seq := range []*yaml.Node{t.containers, t.initCtrs} {
		for _, n := range names(seq) {
			if n == wellknown.ProxyContainerName || n == wellknown.InitContainerName {
				return fmt.Errorf("a container is already named %s but the pod carries no %s annotation", n, annotationInjected)
			}
		}
	}
	for _, n := range names(t.volume) {
		if n == VolumeName {
			return fmt.Errorf("a volume is already named %s but the pod carries no %s annotation", n, annotationInjected)
		}
	}
	if _, ok := ann[wellknown.AnnotationProxyConfig]; ok {
		return fmt.Errorf("the pod already carries the %s annotation but no %s annotation", wellknown.AnnotationProxyConfig, annotationInjected)
	}
	return nil
}

// detectStyle reads the indentation of block collections from the first
// workload's pod spec, so that added lines look like their neighbours.
func detectStyle(src *source, ws []*workload) blockStyle {
	st := blockStyle{eol: "\n", step: 2, gap: 2}
	for _, w := range ws {
		if w.tmpl == nil || w.tmpl.Kind != yaml.MappingNode {
			continue
		}
		specKey, spec := mapGet(w.tmpl, "spec")
		if spec == nil || spec.Kind != yaml.MappingNode || isFlow(spec) {
			continue
		}
		if d := spec.Column - specKey.Column; d > 0 && spec.Line > specKey.Line {
			st.step = d
		}
		if ck, cs := mapGet(spec, "containers"); cs != nil && cs.Kind == yaml.SequenceNode && !isFlow(cs) {
			st.indentSeq = cs.Column > ck.Column
		}
		break
	}
	return st
}

// uninjectDocument removes the injection of every workload of a document
// but those whose indexes are in keep.
func uninjectDocument(d document, root *yaml.Node, keep map[int]bool) ([]byte, []Report, error) {
	ws, err := findWorkloads(root)
	if err != nil {
		return nil, nil, d.errorf(d.lineOf(root), "%w", err)
	}
	if len(ws) == 0 {
		return d.b, nil, nil
	}
	sp := &splicer{src: d.source}
	reports := make([]Report, len(ws))
	for i, w := range ws {
		rep := w.report(d, d.lineOf(w.node))
		if keep[i] {
			rep.Outcome = Unchanged
			reports[i] = rep
			continue
		}
		version, found, err := uninjectWorkload(sp, w)
		if err != nil {
			return nil, nil, d.wrap(fmt.Errorf("%s %q: %w", w.kind, w.name, err))
		}
		rep.Outcome = NotInjected
		if found {
			rep.Outcome, rep.PreviousVersion = Uninjected, version
		}
		reports[i] = rep
	}
	out, err := sp.apply()
	if err != nil {
		return nil, nil, d.wrap(err)
	}
	return out, reports, nil
}

// uninjectWorkload adds the edits that remove w's injection; found is false
// when w carries none.
//
// A key that injection created is removed whole only while it holds nothing
// else: an API server adds to what injection created (the ServiceAccount
// token's volume, a Job's labels in the template's metadata), and those
// stay.
func uninjectWorkload(sp *splicer, w *workload) (version string, found bool, err error) {
	if w.skip != "" {
		return "", false, nil
	}
	t, reason, err := readTemplate(w)
	if err != nil || reason != "" {
		return "", false, err
	}
	v, ok := t.annotations()[annotationInjected]
	if !ok {
		return "", false, nil
	}
	st, err := parseStatus(v)
	if err != nil {
		return "", false, err
	}
	ours := map[string]bool{annotationInjected: true}
	for _, a := range st.Annotations {
		ours[a] = true
	}
	onlyOurs := keysWithin(t.ann, ours)
	switch {
	case st.created("metadata") && onlyOurs && keysWithin(t.meta, map[string]bool{"annotations": true, "creationTimestamp": true}) && nullOrAbsent(mapValue(t.meta, "creationTimestamp")):
		k, _ := mapGet(t.node, "metadata")
		err = sp.removeEntry(t.node, k, "the injected metadata")
	case (st.created("metadata") || st.created("metadata.annotations")) && onlyOurs:
		err = sp.removeEntry(t.meta, t.annKey, "the injected annotations")
	default:
		err = sp.removeEntries(t.ann, ours, "the injected annotations")
	}
	if err != nil {
		return "", false, err
	}
	createdKeys := map[string]bool{}
	for _, c := range []struct {
		key   string
		seq   *yaml.Node
		names []string
	}{
		{"initContainers", t.initCtrs, st.InitContainers},
		{"containers", t.containers, st.Containers},
		{"volumes", t.volume, st.Volumes},
	} {
		drop := map[int]bool{}
		have := names(c.seq)
		for _, n := range c.names {
			found := false
			for i, h := range have {
				if h == n && !drop[i] {
					drop[i], found = true, true
					break
				}
			}
			if !found {
				return "", false, fmt.Errorf("the injected %s %q is missing from spec.%s", singular(c.key), n, c.key)
			}
		}
		if st.created("spec." + c.key) {
			if c.seq == nil {
				return "", false, fmt.Errorf("spec.%s, which injection created, is missing", c.key)
			}
			if len(drop) == len(c.seq.Content) {
				createdKeys[c.key] = true
				continue
			}
		}
		if len(drop) == 0 {
			continue
		}
		if err := sp.removeItems(c.seq, drop, "the injected spec."+c.key); err != nil {
			return "", false, err
		}
	}
	// One call, so that created keys next to each other go as one span.
	if err := sp.removeEntries(t.spec, createdKeys, "the injected spec keys"); err != nil {
		return "", false, err
	}
	return st.Version, true, nil
}

// keysWithin reports whether every key of mapping m is in keys (true for a
// nil m).
func keysWithin(m *yaml.Node, keys map[string]bool) bool {
	if m == nil {
		return true
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if !keys[m.Content[i].Value] {
			return false
		}
	}
	return true
}

// nullOrAbsent: an API server writes creationTimestamp: null into the
// metadata of pod templates, which is as good as nothing.
func nullOrAbsent(n *yaml.Node) bool { return n == nil || isNull(n) }

// mapValue is the value of key in mapping m, nil if absent.
func mapValue(m *yaml.Node, key string) *yaml.Node {
	_, v := mapGet(m, key)
	return v
}

func singular(key string) string {
	switch key {
	case "initContainers":
		return "init container"
	case "containers":
		return "container"
	}
	return "volume"
}

// String is the report's one line for people: where, what, and what
// happened.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "document %d", r.Document)
	if r.Item >= 0 {
		fmt.Fprintf(&b, ", item %d", r.Item)
	}
	fmt.Fprintf(&b, ", line %d: %s ", r.Line, r.Kind)
	if r.Namespace != "" {
		b.WriteString(r.Namespace + "/")
	}
	if r.Name == "" {
		b.WriteString("(unnamed)")
	}
	b.WriteString(r.Name)
	b.WriteString(" " + string(r.Outcome))
	switch {
	case r.Reason != "" && r.PreviousVersion != "":
		fmt.Fprintf(&b, ": %s; the injection of %s was removed", r.Reason, r.PreviousVersion)
	case r.Reason != "":
		b.WriteString(": " + r.Reason)
	case r.Outcome == Injected && r.PreviousVersion != "":
		fmt.Fprintf(&b, " (replaced the injection of %s)", r.PreviousVersion)
	case r.Outcome == Uninjected && r.PreviousVersion != "":
		fmt.Fprintf(&b, " (injected by %s)", r.PreviousVersion)
	}
	if r.Warning != "" {
		b.WriteString("; warning: " + r.Warning)
	}
	return b.String()
}

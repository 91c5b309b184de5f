package render

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/meshctl/mesh/templates"
)

// InvalidValuesError lists every problem ValidateValues found, sorted, each
// naming the value by its dotted key.
type InvalidValuesError struct {
	Problems []string
}

func (e *InvalidValuesError) Error() string {
	if len(e.Problems) == 1 {
		return "invalid values: " + e.Problems[0]
	}
	return "invalid values:\n  " + strings.Join(e.Problems, "\n  ")
}

// ValidateValues checks values, merged onto the chart's defaults, against
// the chart's values.schema.json. Helm checks the same schema too, but its
// messages name JSON pointers and schema keywords; these name the user's key
// and what was expected. All problems are reported, not just the first.
//
// The validator implements the part of JSON Schema draft 7 the chart uses
// (type, properties, additionalProperties, required, enum, minimum, maximum,
// minLength, pattern, items, local $ref); a test fails if the schema starts
// using anything else.
func ValidateValues(values map[string]any) error {
	s, err := loadSchema()
	if err != nil {
		return err
	}
	v := &validator{root: s}
	merged := MergeValues(Defaults(), normalize(values))
	v.validate(s, merged, nil)
	if len(v.problems) == 0 {
		return nil
	}
	sort.SliceStable(v.problems, func(i, j int) bool {
		if v.problems[i].key != v.problems[j].key {
			return v.problems[i].key < v.problems[j].key
		}
		return v.problems[i].text < v.problems[j].text
	})
	e := &InvalidValuesError{}
	for _, p := range v.problems {
		e.Problems = append(e.Problems, p.text)
	}
	return e
}

// schema is the subset of a JSON Schema the chart's values schema uses.
type schema struct {
	Ref                  string             `json:"$ref"`
	Type                 schemaTypes        `json:"type"`
	Properties           map[string]*schema `json:"properties"`
	AdditionalProperties *additional        `json:"additionalProperties"`
	Required             []string           `json:"required"`
	Enum                 []any              `json:"enum"`
	Minimum              *float64           `json:"minimum"`
	Maximum              *float64           `json:"maximum"`
	MinLength            *int               `json:"minLength"`
	Pattern              string             `json:"pattern"`
	Items                *schema            `json:"items"`
	Definitions          map[string]*schema `json:"definitions"`

	pattern *regexp.Regexp
}

// schemaTypes is "type": a name or a list of names.
type schemaTypes []string

func (t *schemaTypes) UnmarshalJSON(data []byte) error {
	var one string
	if err := json.Unmarshal(data, &one); err == nil {
		*t = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(data, &many); err != nil {
		return err
	}
	*t = many
	return nil
}

// additional is "additionalProperties": false, true, or a schema.
type additional struct {
	allowed bool
	schema  *schema
}

func (a *additional) UnmarshalJSON(data []byte) error {
	var b bool
	if err := json.Unmarshal(data, &b); err == nil {
		a.allowed = b
		return nil
	}
	a.allowed = true
	a.schema = &schema{}
	return json.Unmarshal(data, a.schema)
}

// supportedKeywords are the keywords the validator understands, plus the
// annotations it may ignore.
var supportedKeywords = map[string]bool{
	"$schema": true, "$ref": true, "title": true, "description": true, "definitions": true,
	"type": true, "properties": true, "additionalProperties": true, "required": true,
	"enum": true, "minimum": true, "maximum": true, "minLength": true, "pattern": true, "items": true,
}

func loadSchema() (*schema, error) {
	data, err := fs.ReadFile(templates.Chart(), "values.schema.json")
	if err != nil {
		return nil, fmt.Errorf("reading the values schema: %w", err)
	}
	s := &schema{}
	if err := json.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("decoding the values schema: %w", err)
	}
	if err := compilePatterns(s); err != nil {
		return nil, fmt.Errorf("compiling the values schema: %w", err)
	}
	return s, nil
}

func compilePatterns(s *schema) error {
	if s == nil {
		return nil
	}
	if s.Pattern != "" {
		re, err := regexp.Compile(s.Pattern)
		if err != nil {
			return err
		}
		s.pattern = re
	}
	children := []*schema{s.Items}
	if s.AdditionalProperties != nil {
		children = append(children, s.AdditionalProperties.schema)
	}
	for _, c := range s.Properties {
		children = append(children, c)
	}
	for _, c := range s.Definitions {
		children = append(children, c)
	}
	for _, c := range children {
		if err := compilePatterns(c); err != nil {
			return err
		}
	}
	return nil
}

type validator struct {
	root     *schema
	problems []problem
}

// problem is one finding; key orders the report.
type problem struct {
	key, text string
}

func (v *validator) addf(path []string, format string, args ...any) {
	key := keyString(path)
	v.problems = append(v.problems, problem{key, key + ": " + fmt.Sprintf(format, args...)})
}

func (v *validator) resolve(s *schema) *schema {
	for s != nil && s.Ref != "" {
		name, ok := strings.CutPrefix(s.Ref, "#/definitions/")
		if !ok {
			return nil
		}
		s = v.root.Definitions[name]
	}
	return s
}

func (v *validator) validate(s *schema, value any, path []string) {
	s = v.resolve(s)
	if s == nil {
		v.addf(path, "the values schema has a broken reference")
		return
	}
	if len(s.Type) > 0 && !typeMatches(s.Type, value) {
		v.addf(path, "want %s, got %s", strings.Join(s.Type, " or "), describe(value))
		return
	}
	if len(s.Enum) > 0 && !inEnum(s.Enum, value) {
		v.addf(path, "%s is not one of %s", scalar(value), enumString(s.Enum))
	}
	switch value := value.(type) {
	case string:
		if s.MinLength != nil && len([]rune(value)) < *s.MinLength {
			if *s.MinLength == 1 {
				v.addf(path, "must not be empty")
			} else {
				v.addf(path, "%s is shorter than %d characters", scalar(value), *s.MinLength)
			}
		}
		if s.pattern != nil && !s.pattern.MatchString(value) {
			v.addf(path, "%s does not match %s", scalar(value), s.Pattern)
		}
	case float64:
		if s.Minimum != nil && value < *s.Minimum {
			v.addf(path, "%s is less than the minimum %s", number(value), number(*s.Minimum))
		}
		if s.Maximum != nil && value > *s.Maximum {
			v.addf(path, "%s is more than the maximum %s", number(value), number(*s.Maximum))
		}
	case []any:
		if s.Items != nil {
			for i, e := range value {
				v.validate(s.Items, e, appendIndex(path, i))
			}
		}
	case map[string]any:
		v.validateObject(s, value, path)
	}
}

func (v *validator) validateObject(s *schema, value map[string]any, path []string) {
	for _, name := range s.Required {
		if _, ok := value[name]; !ok {
			v.addf(append(path, name), "is required")
		}
	}
	for _, k := range sortedKeys(value) {
		child := append(append([]string(nil), path...), k)
		if ps, ok := s.Properties[k]; ok {
			v.validate(ps, value[k], child)
			continue
		}
		switch {
		case s.AdditionalProperties == nil || (s.AdditionalProperties.allowed && s.AdditionalProperties.schema == nil):
		case s.AdditionalProperties.schema != nil:
			v.validate(s.AdditionalProperties.schema, value[k], child)
		default:
			v.problems = append(v.problems, problem{keyString(child), unknownKey(child, sortedKeys(s.Properties))})
		}
	}
}

func unknownKey(path []string, allowed []string) string {
	where := "at the top level"
	if len(path) > 1 {
		where = "under " + keyString(path[:len(path)-1])
	}
	if len(allowed) == 0 {
		return fmt.Sprintf("unknown value key %s: no keys are allowed %s", keyString(path), where)
	}
	return fmt.Sprintf("unknown value key %s: allowed keys %s are %s", keyString(path), where, strings.Join(allowed, ", "))
}

// keyString names a value the way --set does: a.b.c, with list indexes
// as a[0] and keys that hold dots quoted, a["kubernetes.io/os"].
func keyString(path []string) string {
	if len(path) == 0 {
		return "values"
	}
	var b strings.Builder
	for i, p := range path {
		switch {
		case strings.HasPrefix(p, "["):
			b.WriteString(p)
		case strings.ContainsAny(p, ".[]= ,") || p == "":
			b.WriteString("[" + strconv.Quote(p) + "]")
		default:
			if i > 0 {
				b.WriteString(".")
			}
			b.WriteString(p)
		}
	}
	return b.String()
}

func appendIndex(path []string, i int) []string {
	return append(append([]string(nil), path...), "["+strconv.Itoa(i)+"]")
}

func typeMatches(types []string, value any) bool {
	for _, t := range types {
		switch value := value.(type) {
		case nil:
			if t == "null" {
				return true
			}
		case bool:
			if t == "boolean" {
				return true
			}
		case string:
			if t == "string" {
				return true
			}
		case float64:
			if t == "number" || (t == "integer" && value == math.Trunc(value) && !math.IsInf(value, 0)) {
				return true
			}
		case []any:
			if t == "array" {
				return true
			}
		case map[string]any:
			if t == "object" {
				return true
			}
		}
	}
	return false
}

func inEnum(enum []any, value any) bool {
	for _, e := range enum {
		if e == value {
			return true
		}
	}
	return false
}

func enumString(enum []any) string {
	parts := make([]string, len(enum))
	for i, e := range enum {
		if s, ok := e.(string); ok && s == "" {
			parts[i] = `""`
			continue
		}
		parts[i] = fmt.Sprint(e)
	}
	return strings.Join(parts, ", ")
}

// describe names a value's type and, for scalars, the value.
func describe(value any) string {
	switch value := value.(type) {
	case nil:
		return "null"
	case bool:
		return fmt.Sprintf("boolean %t", value)
	case string:
		return fmt.Sprintf("string %q", value)
	case float64:
		if value == math.Trunc(value) {
			return "integer " + number(value)
		}
		return "number " + number(value)
	case []any:
		return "list"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", value)
}

// scalar prints a value as the user wrote it, strings quoted.
func scalar(value any) string {
	switch value := value.(type) {
	case string:
		return strconv.Quote(value)
	case float64:
		return number(value)
	}
	return describe(value)
}

func number(f float64) string {
	return strconv.FormatFloat(f, 'f', -1, 64)
}

package render

import (
	"reflect"
	"sort"
	"strings"
	"testing"

	apiextensions "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apivalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/wellknown"
)

func renderedCRD(t *testing.T) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	m, err := Render(testOptions(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	crds := m.CRDs()
	if len(crds) != 1 {
		t.Fatalf("%d CRDs, want 1", len(crds))
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(crds[0].Object, crd, true); err != nil {
		t.Fatal(err)
	}
	return crd
}

func structural(t *testing.T, crd *apiextensionsv1.CustomResourceDefinition) (*structuralschema.Structural, *apiextensions.JSONSchemaProps) {
	t.Helper()
	if len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Schema == nil {
		t.Fatal("want one version with a schema")
	}
	internal := &apiextensions.JSONSchemaProps{}
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(crd.Spec.Versions[0].Schema.OpenAPIV3Schema, internal, nil); err != nil {
		t.Fatal(err)
	}
	s, err := structuralschema.NewStructural(internal)
	if err != nil {
		t.Fatalf("the schema is not structural: %v", err)
	}
	if errs := structuralschema.ValidateStructural(field.NewPath("openAPIV3Schema"), s); len(errs) > 0 {
		t.Fatalf("the schema is not structural: %v", errs.ToAggregate())
	}
	return s, internal
}

func TestCRD(t *testing.T) {
	crd := renderedCRD(t)
	if crd.Name != meshconfig.Resource+"."+wellknown.APIGroup || crd.Spec.Group != wellknown.APIGroup || crd.Spec.Names.Kind != meshconfig.Kind ||
		crd.Spec.Names.Plural != meshconfig.Resource || crd.Spec.Scope != apiextensionsv1.NamespaceScoped {
		t.Errorf("names: %+v %s", crd.Spec.Names, crd.Spec.Scope)
	}
	v := crd.Spec.Versions[0]
	if v.Name != meshconfig.Version || !v.Served || !v.Storage {
		t.Errorf("version %s served %t storage %t", v.Name, v.Served, v.Storage)
	}
	var cols []string
	for _, c := range v.AdditionalPrinterColumns {
		cols = append(cols, c.Name)
	}
	if got := strings.Join(cols, ","); got != "Trust Domain,Proxy Image,Age" {
		t.Errorf("printer columns %s", got)
	}
}

// The rendered MeshConfig passes the CRD's validation and loses nothing to
// pruning; a field the schema lacks would be pruned, a wrong type rejected.
func TestMeshConfigMatchesTheCRD(t *testing.T) {
	crd := renderedCRD(t)
	s, internal := structural(t, crd)
	validator, _, err := apivalidation.NewSchemaValidator(internal)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Render(testOptions(t, map[string]any{"proxy": map[string]any{"nativeSidecar": true}}))
	if err != nil {
		t.Fatal(err)
	}
	mc := m.Find(meshconfig.Kind, wellknown.DefaultMeshNamespace, wellknown.MeshConfigName)
	obj := runtime.DeepCopyJSON(mc.Object)
	if errs := apivalidation.ValidateCustomResource(nil, obj, validator); len(errs) > 0 {
		t.Errorf("the rendered MeshConfig fails the CRD's validation: %v", errs.ToAggregate())
	}
	if pruned := pruning.PruneWithOptions(obj, s, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true}); len(pruned) > 0 {
		t.Errorf("the CRD would prune %v", pruned)
	}

	bad := runtime.DeepCopyJSON(mc.Object)
	bad["spec"].(map[string]any)["proxy"].(map[string]any)["uid"] = "root"
	if errs := apivalidation.ValidateCustomResource(nil, bad, validator); len(errs) == 0 {
		t.Error("the CRD accepts a string uid")
	}
}

// The CRD's schema has exactly the fields of meshconfig.Spec, at every level
// of the mesh's own types (corev1 types are checked by the test above).
func TestCRDFieldsMatchSpec(t *testing.T) {
	crd := renderedCRD(t)
	spec := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	compareFields(t, "spec", reflect.TypeOf(meshconfig.Spec{}), spec)
}

func compareFields(t *testing.T, path string, typ reflect.Type, schema apiextensionsv1.JSONSchemaProps) {
	t.Helper()
	var goFields []string
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		goFields = append(goFields, name)
		if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == typ.PkgPath() {
			compareFields(t, path+"."+name, f.Type, schema.Properties[name])
		}
	}
	var schemaFields []string
	for name := range schema.Properties {
		schemaFields = append(schemaFields, name)
	}
	sort.Strings(goFields)
	sort.Strings(schemaFields)
	if !reflect.DeepEqual(goFields, schemaFields) {
		t.Errorf("%s: Go fields %v, CRD fields %v", path, goFields, schemaFields)
	}
}

func mustYAML(t *testing.T, v any) string {
	t.Helper()
	data, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

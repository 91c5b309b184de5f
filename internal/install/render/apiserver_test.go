package render

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/meshctl/mesh/internal/testenv"
)

// Tests that need no cluster pay nothing: the env starts on first use.
func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Options{NoControllerManager: true}))
}

// TestAPIServerAcceptsTheManifest applies every golden value set to a real
// API server: each object must pass the server's validation (the CRD's
// schema included, for the MeshConfig), and re-applying the rendering of a
// newer version must pass too, which it would not if an immutable field,
// such as the Deployment's selector, changed with the version.
func TestAPIServerAcceptsTheManifest(t *testing.T) {
	env := testenv.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))

	apply := func(t *testing.T, obj *unstructured.Unstructured) {
		t.Helper()
		gvk := obj.GroupVersionKind()
		var mappingErr error
		for {
			mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err == nil {
				data, err := obj.MarshalJSON()
				if err != nil {
					t.Fatal(err)
				}
				force := true
				_, err = client.Resource(mapping.Resource).Namespace(obj.GetNamespace()).Patch(ctx, obj.GetName(), types.ApplyPatchType, data,
					metav1.PatchOptions{FieldManager: "render-test", Force: &force})
				if err != nil {
					t.Fatalf("applying %s %s/%s: %v", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
				}
				return
			}
			// A kind whose CRD was just created is not served at once.
			mappingErr = err
			mapper.Reset()
			select {
			case <-ctx.Done():
				t.Fatalf("mapping %s: %v", gvk, mappingErr)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}

	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			values, err := parseValuesYAML(tc.name+".yaml", []byte(tc.values))
			if err != nil {
				t.Fatal(err)
			}
			for _, version := range []string{"v0.1.0", "v0.2.0"} {
				opts := testOptions(t, values)
				opts.Namespace = fmt.Sprintf("render-%s", tc.name)
				opts.Version = version
				m, err := Render(opts)
				if err != nil {
					t.Fatal(err)
				}
				for _, obj := range m.Objects {
					apply(t, obj)
				}
			}
		})
	}
}

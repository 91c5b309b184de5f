package install

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	meshversion "github.com/meshctl/mesh/internal/version"
	"github.com/meshctl/mesh/internal/wellknown"
)

// Keys of the installation's Secret: the user's values, and the inventory of
// the objects the last install or upgrade applied.
const (
	storedValuesKey = "values.yaml"
	inventoryKey    = "inventory.json"
	// versionKey holds the version as given; the label holds it as a label
	// value (see version.LabelValue).
	versionKey = "version"
)

func decodeStoredValues(b []byte) (map[string]any, error) {
	values := map[string]any{}
	if len(b) == 0 {
		return values, nil
	}
	if err := yaml.Unmarshal(b, &values); err != nil {
		return nil, err
	}
	return values, nil
}

// valuesSecret is the Secret that records an installation: the user's values
// (never credentials: those live in their own Secrets) and, in its labels,
// the version that wrote it.
func valuesSecret(namespace, version string, labels map[string]string, values map[string]any, inventory []Ref) (*corev1.Secret, error) {
	b, err := yaml.Marshal(values)
	if err != nil {
		return nil, fmt.Errorf("encoding values: %w", err)
	}
	inv, err := json.Marshal(inventory)
	if err != nil {
		return nil, fmt.Errorf("encoding the inventory: %w", err)
	}
	l := map[string]string{}
	for k, v := range labels {
		l[k] = v
	}
	l[wellknown.LabelComponent] = "install"
	l[wellknown.LabelVersion] = meshversion.LabelValue(version)
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: wellknown.ValuesSecretName, Namespace: namespace, Labels: l},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{storedValuesKey: b, inventoryKey: inv, versionKey: []byte(version)},
	}, nil
}

func decodeInventory(b []byte) ([]Ref, error) {
	var refs []Ref
	if len(b) == 0 {
		return nil, nil
	}
	if err := json.Unmarshal(b, &refs); err != nil {
		return nil, fmt.Errorf("decoding the inventory: %w", err)
	}
	return refs, nil
}

// toUnstructured converts a typed object (with its TypeMeta set) for apply.
func toUnstructured(obj any) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("converting %T: %w", obj, err)
	}
	return &unstructured.Unstructured{Object: m}, nil
}

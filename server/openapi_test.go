package server

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// TestOpenAPIMatchesRoutes fails when a route and the OpenAPI document
// disagree: every route is documented, every documented operation is
// served, a route is deprecated in the table exactly when its operation
// is, and the document's version is the API's.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string `json:"openapi"`
		Info    struct {
			Version string `json:"version"`
		} `json:"info"`
		Paths map[string]map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q, want 3.x", doc.OpenAPI)
	}
	if v := doc.Info.Version; !strings.HasPrefix(v, APIVersion+".") || strings.Count(v, ".") != 2 {
		t.Errorf("info.version %q, want %s.<patch> (APIVersion)", v, APIVersion)
	}
	deprecated := 0
	for _, rt := range (&Server{metrics: NewMetrics()}).routes() {
		op := doc.Paths[rt.pattern][strings.ToLower(rt.method)]
		if op == nil {
			continue // reported below
		}
		if inDoc := op["deprecated"] == true; inDoc != (rt.deprecated != nil) {
			t.Errorf("%s %s: deprecated in the route table %v, in openapi.json %v", rt.method, rt.pattern, rt.deprecated != nil, inDoc)
		}
		if rt.deprecated != nil {
			deprecated++
		}
	}
	if deprecated == 0 {
		t.Error("no route is deprecated: the check above checks nothing (drop it with the last deprecated route)")
	}
	var documented, served []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	s := &Server{metrics: NewMetrics()}
	for _, rt := range s.routes() {
		served = append(served, rt.method+" "+rt.pattern)
	}
	slices.Sort(documented)
	slices.Sort(served)
	for _, r := range served {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(served, d) {
			t.Errorf("openapi.json documents %s, which no route serves", d)
		}
	}
}

// TestOpenAPIErrorCodes checks that the documented error codes cover the
// codes the API can return.
func TestOpenAPIErrorCodes(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas struct {
				ErrorBody struct {
					Properties struct {
						Error struct {
							Properties struct {
								Code struct {
									Enum []string `json:"enum"`
								} `json:"code"`
							} `json:"properties"`
						} `json:"error"`
					} `json:"properties"`
				} `json:"ErrorBody"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	enum := doc.Components.Schemas.ErrorBody.Properties.Error.Properties.Code.Enum
	for _, c := range []string{"unauthenticated", "permission_denied", "malformed_json", "unknown_field",
		"body_too_large", "unavailable", "not_found", "invalid_transition", "url_not_allowed", "unknown_scenario",
		"invalid_url", "invalid_argument", "invalid_snapshot", "method_not_allowed", "internal", "wrong_cluster_key", "unreachable", "wrong_direction", "other_cluster",
		"quota_exceeded", "tenant_disabled", "tenant_has_active_jobs"} {
		if !slices.Contains(enum, c) {
			t.Errorf("error code %q is not documented", c)
		}
	}
}

// TestOpenAPIOperationIDs: every operation has a unique operationId,
// which names the action of its audit records.
func TestOpenAPIOperationIDs(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			where := strings.ToUpper(method) + " " + path
			if op.OperationID == "" {
				t.Errorf("%s has no operationId", where)
			}
			if other, ok := seen[op.OperationID]; ok {
				t.Errorf("%s and %s share operationId %q", where, other, op.OperationID)
			}
			seen[op.OperationID] = where
		}
	}
}

// TestOpenAPIOperationsComplete names, for each operation, what the
// document lacks (docs/api.md, "Changing the API"): a request example
// where it takes a body, an example on its success response, and its 4xx
// responses with the error schema.
func TestOpenAPIOperationsComplete(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(servedOpenAPI(t))
	if err != nil {
		t.Fatal(err)
	}
	const errRef = "#/components/responses/Error"
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			where := fmt.Sprintf("%s %s (%s)", method, path, op.OperationID)
			if op.OperationID == "" {
				where = method + " " + path
			}
			if rb := op.RequestBody; rb != nil && rb.Value != nil {
				for ct, mt := range rb.Value.Content {
					if mt.Example == nil && len(mt.Examples) == 0 {
						t.Errorf("%s: its request body (%s) has no example: add \"example\" beside its schema", where, ct)
					}
				}
			}
			success := false
			for _, code := range []int{201, 200, 202, 204} {
				r := op.Responses.Status(code)
				if r == nil || r.Value == nil {
					continue
				}
				for _, mt := range r.Value.Content {
					success = success || mt.Example != nil || len(mt.Examples) > 0
				}
				success = success || len(r.Value.Content) == 0
			}
			if !success {
				t.Errorf("%s: no example on its success response (201, 200 or 202): add \"example\" beside the response's schema", where)
			}
			var errs []string
			for code, r := range op.Responses.Map() {
				if !strings.HasPrefix(code, "4") {
					continue
				}
				if r.Ref != errRef && !isErrorBody(r.Value) {
					t.Errorf("%s: its %s response is neither {\"$ref\": %q} nor an ErrorBody", where, code, errRef)
				}
				errs = append(errs, code)
			}
			if len(errs) == 0 {
				t.Errorf("%s: no 4xx response: add each status it can refuse with as {\"$ref\": %q} (401 and 403 with an API key, 404 with {id}, 400 and 413 with a JSON body, 400 on a GET)", where, errRef)
			}
		}
	}
}

// isErrorBody reports whether r's JSON content is the ErrorBody schema.
func isErrorBody(r *openapi3.Response) bool {
	if r == nil {
		return false
	}
	mt := r.Content.Get("application/json")
	return mt != nil && mt.Schema != nil && mt.Schema.Ref == "#/components/schemas/ErrorBody"
}

package server

import (
	_ "embed"
	"net/http"
	"strings"

	json "github.com/go-json-experiment/json/v1"
)

// openAPI is the API's OpenAPI 3 document. A test fails when it and the
// route table disagree.
//
//go:embed openapi.json
var openAPI []byte

func handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPI)
}

// OpenAPIVersion returns the API's version, "v" and the major version of
// the OpenAPI document (the /v1 of every route), and the document's own
// version (info.version).
func OpenAPIVersion() (api, document string) {
	var doc struct {
		Info struct {
			Version string `json:"version"`
		} `json:"info"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		panic("server: embedded openapi.json does not decode: " + err.Error())
	}
	major, _, _ := strings.Cut(doc.Info.Version, ".")
	return "v" + major, doc.Info.Version
}

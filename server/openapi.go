package server

import (
	_ "embed"
	"net/http"
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

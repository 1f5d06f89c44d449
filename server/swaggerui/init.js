// Starts Swagger UI on the live OpenAPI document of the node that serves
// this page. A file of its own, not an inline script, so that the page's
// Content-Security-Policy can forbid inline scripts. "Try it out" sends
// requests to this node with the key given under "Authorize"
// (Authorization: Bearer ffk_...).
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", document.baseURI).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    displayOperationId: true,
    // No request leaves for the public validator: the page works offline.
    validatorUrl: null,
    tryItOutEnabled: false,
    persistAuthorization: false,
  });
});

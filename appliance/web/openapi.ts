/**
 * The OpenAPI 3.1 description of the admin API, written by hand (served at
 * `/api/openapi.json`). The JSON-RPC methods themselves are listed by
 * `rpc_get_methods`; their params are documented in docs/ and `sluice rpc`.
 * @module
 */

const error = {
  type: "object",
  required: ["error"],
  properties: {
    error: {
      type: "object",
      required: ["code", "message"],
      properties: { code: { type: "integer" }, message: { type: "string" } },
    },
  },
};

const jsonList = (description: string) => ({
  description,
  content: { "application/json": { schema: { type: "array", items: { type: "object" } } } },
});

const unauthorized = {
  description: "No valid session cookie or bearer token",
  content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
};

/** The document; `version` is the appliance's. */
export function openApiDocument(version: string): Record<string, unknown> {
  return {
    openapi: "3.1.0",
    info: {
      title: "sluice admin API",
      version,
      description:
        "Manage a sluice appliance. Scripts authenticate with a bearer token (created on the " +
        "Settings page); the browser pages use a session cookie and must send the page's CSRF " +
        "token in the X-CSRF-Token header on every POST.",
    },
    servers: [{ url: "/" }],
    security: [{ bearer: [] }, { session: [] }],
    components: {
      securitySchemes: {
        bearer: { type: "http", scheme: "bearer" },
        session: { type: "apiKey", in: "cookie", name: "sluice_session" },
      },
      schemas: {
        Error: error,
        JsonRpcRequest: {
          type: "object",
          required: ["jsonrpc", "method"],
          properties: {
            jsonrpc: { const: "2.0" },
            id: { type: ["string", "integer", "null"] },
            method: { type: "string", examples: ["bdev_get_bdevs"] },
            params: { type: ["object", "array"] },
          },
        },
        JsonRpcResponse: {
          type: "object",
          required: ["jsonrpc", "id"],
          properties: {
            jsonrpc: { const: "2.0" },
            id: { type: ["string", "integer", "null"] },
            result: {},
            error: {
              type: "object",
              properties: { code: { type: "integer" }, message: { type: "string" } },
            },
          },
        },
      },
    },
    paths: {
      "/api/rpc": {
        post: {
          summary: "Call JSON-RPC 2.0 methods (the same table as the Unix socket); batches allowed",
          parameters: [{
            name: "X-CSRF-Token",
            in: "header",
            required: false,
            description: "Required with a session cookie; not with a bearer token",
            schema: { type: "string" },
          }],
          requestBody: {
            required: true,
            content: {
              "application/json": {
                schema: {
                  oneOf: [
                    { $ref: "#/components/schemas/JsonRpcRequest" },
                    { type: "array", items: { $ref: "#/components/schemas/JsonRpcRequest" } },
                  ],
                },
              },
            },
          },
          responses: {
            "200": {
              description: "The response (or batch of responses); errors are JSON-RPC errors",
              content: {
                "application/json": {
                  schema: {
                    oneOf: [
                      { $ref: "#/components/schemas/JsonRpcResponse" },
                      { type: "array", items: { $ref: "#/components/schemas/JsonRpcResponse" } },
                    ],
                  },
                },
              },
            },
            "204": { description: "Only notifications were sent: nothing to answer" },
            "401": unauthorized,
            "403": {
              description: "CSRF token missing or wrong",
              content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
            },
            "413": { description: "Request body larger than 1 MiB" },
          },
        },
      },
      "/api/bdevs": {
        get: {
          summary: "bdev_get_bdevs",
          responses: { "200": jsonList("Every bdev, SPDK's fields"), "401": unauthorized },
        },
      },
      "/api/subsystems": {
        get: {
          summary: "nvmf_get_subsystems",
          responses: {
            "200": jsonList("NVMe-oF subsystems with listeners, hosts, namespaces"),
            "401": unauthorized,
          },
        },
      },
      "/api/vhost": {
        get: {
          summary: "vhost_get_controllers",
          responses: { "200": jsonList("vhost-user-blk controllers"), "401": unauthorized },
        },
      },
      "/api/stats": {
        get: {
          summary: "sluice_get_stats",
          responses: {
            "200": {
              description: "Counters of bdevs, the reactor and NVMe/TCP",
              content: { "application/json": { schema: { type: "object" } } },
            },
            "401": unauthorized,
          },
        },
      },
      "/metrics": {
        get: {
          summary: "The same counters in the Prometheus text exposition format 0.0.4",
          responses: {
            "200": { description: "text/plain; version=0.0.4", content: { "text/plain": {} } },
            "401": unauthorized,
          },
        },
      },
    },
  };
}

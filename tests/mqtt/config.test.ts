// The OTA_MQTT_* variables: what they turn into, what is refused, and that a broker password never appears in a
// message.
import { ConfigError, loadConfig } from "../../server/infra/config/config";

describe("MQTT configuration", () => {
  it("is off without OTA_MQTT_URL", () => {
    expect(loadConfig({}, "/srv/ota").mqtt).toBeNull();
  });

  it("takes the credentials out of the URL, with the documented defaults and the server's CA for mqtts", () => {
    const c = loadConfig({ OTA_MQTT_URL: "mqtts://ota-server:s%40cret@broker.example.com:8883" }, "/srv/ota");
    expect(c.mqtt).toEqual({
      url: "mqtts://broker.example.com:8883",
      username: "ota-server",
      password: "s@cret",
      ca: "/srv/ota/certs/ca.crt",
      clientId: "esp32-ota-server",
      topic: "ota/{device}/desired",
      compat: false,
      rate: 200,
    });
  });

  it("separate variables win over the URL's credentials; plain mqtt needs no CA", () => {
    const c = loadConfig(
      {
        OTA_MQTT_URL: "mqtt://a:b@127.0.0.1:1883",
        OTA_MQTT_USERNAME: "ota",
        OTA_MQTT_PASSWORD: "pw",
        OTA_MQTT_TOPIC: "fleet/{device}/ota",
        OTA_MQTT_COMPAT: "yes",
        OTA_MQTT_RATE: "50",
        OTA_MQTT_CLIENT_ID: "ota-1",
      },
      "/srv/ota",
    );
    expect(c.mqtt).toEqual({ url: "mqtt://127.0.0.1:1883", username: "ota", password: "pw", ca: null, clientId: "ota-1", topic: "fleet/{device}/ota", compat: true, rate: 50 });
    expect(loadConfig({ OTA_MQTT_URL: "mqtts://b:8883", OTA_MQTT_CA: "mq/ca.pem" }, "/srv/ota").mqtt?.ca).toBe("/srv/ota/mq/ca.pem");
  });

  it.each([
    [{ OTA_MQTT_URL: "http://broker:1883" }, /OTA_MQTT_URL: must be an MQTT broker URL/],
    [{ OTA_MQTT_URL: "mqtt://x", OTA_MQTT_TOPIC: "ota/desired" }, /OTA_MQTT_TOPIC: must contain \{device\}/],
    [{ OTA_MQTT_URL: "mqtt://x", OTA_MQTT_TOPIC: "ota/+/{device}" }, /OTA_MQTT_TOPIC: must not contain the MQTT wildcards/],
    [{ OTA_MQTT_URL: "mqtt://x", OTA_MQTT_RATE: "0" }, /OTA_MQTT_RATE: must be between 1 and 100000/],
    [{ OTA_MQTT_URL: "mqtt://x", OTA_MQTT_COMPAT: "sometimes" }, /OTA_MQTT_COMPAT: must be true or false/],
    [{ OTA_MQTT_URL: "mqtt://x", OTA_MQTT_CLIENT_ID: "a b" }, /OTA_MQTT_CLIENT_ID: must be 1-64 letters/],
  ])("%j is refused with a message naming the variable", (env, message) => {
    expect(() => loadConfig(env, "/tmp")).toThrow(ConfigError);
    expect(() => loadConfig(env, "/tmp")).toThrow(message);
  });

  it("never repeats the URL, which may hold a password, in a message", () => {
    let message = "";
    try {
      loadConfig({ OTA_MQTT_URL: "http://ota:hunter2@broker:1883" }, "/tmp");
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/OTA_MQTT_URL/);
    expect(message).not.toContain("hunter2");
  });
});

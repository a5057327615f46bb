<?php
// Pushes a message through wssd's push API, from any PHP script (a web request, a cron job,
// a queue worker), as GatewayWorker's Gateway::sendToUid and sendToGroup do.
//
//   wssd --app http://127.0.0.1:8000/ --api 127.0.0.1:8283
//   php examples/app-bridge/push.php user bob "your order shipped"
//   php examples/app-bridge/push.php group lobby "the lobby closes in 5 minutes"
//
// WSSD_API (default http://127.0.0.1:8283) and WSSD_API_TOKEN (with --api-token-file) set
// where it goes.

function wssd_api(string $path, array $body): array
{
    $base = getenv('WSSD_API') ?: 'http://127.0.0.1:8283';
    $headers = "Content-Type: application/json\r\n";
    if ($token = getenv('WSSD_API_TOKEN')) {
        $headers .= "Authorization: Bearer $token\r\n";
    }
    $context = stream_context_create(['http' => [
        'method' => 'POST',
        'header' => $headers,
        'content' => json_encode($body),
        'ignore_errors' => true, // read the error body of a 4xx too
        'timeout' => 5,
    ]]);
    $answer = file_get_contents($base . $path, false, $context);
    if ($answer === false) {
        fwrite(STDERR, "wssd's push API at $base does not answer: is wssd running with --api?\n");
        exit(2);
    }
    $status = (int) explode(' ', $http_response_header[0])[1];
    return [$status, json_decode($answer, true)];
}

[, $kind, $to, $text] = $argv + [null, null, null, null];
if (!in_array($kind, ['user', 'group', 'id'], true) || $to === null || $text === null) {
    fwrite(STDERR, "usage: php push.php user|group|id TARGET TEXT\n");
    exit(2);
}
[$status, $answer] = wssd_api('/send', [$kind => $kind === 'id' ? (int) $to : $to, 'text' => $text]);
if ($status !== 200) {
    fwrite(STDERR, "wssd refused the push ($status): {$answer['error']}\n");
    exit(1);
}
echo "sent to {$answer['sent']} connection(s) on this instance\n";

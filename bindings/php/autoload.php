<?php
// For a copy of bindings/php without Composer: `require '/path/to/gardenstate/autoload.php';`
// loads the binding's classes (Composer users get them from vendor/autoload.php instead).
declare(strict_types=1);

require_once __DIR__ . '/src/Abi.php';
require_once __DIR__ . '/src/Exceptions.php';
require_once __DIR__ . '/src/Library.php';
require_once __DIR__ . '/src/Store.php';
require_once __DIR__ . '/src/SessionHandler.php';
